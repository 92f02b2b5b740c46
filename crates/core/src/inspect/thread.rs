//! Per-thread state of a seized (ptrace-stopped) thread: registers, signal mask, pending
//! signals, seccomp filters, rseq registration, scheduling.

use nix::errno::Errno;

use crate::arch;
use crate::error::{Error, ErrorCode, Result};

const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// Size of one siginfo_t as the kernel copies it out.
pub const SIGINFO_SIZE: usize = 128;

/// One queued signal (raw siginfo bytes plus the header fields).
#[derive(Debug, Clone)]
pub struct PendingSignal {
    pub signo: i32,
    pub code: i32,
    pub raw: Vec<u8>,
}

/// One classic-BPF seccomp filter of the thread (index 0 is the first installed, the oldest).
#[derive(Debug, Clone)]
pub struct SeccompFilter {
    pub index: u32,
    /// `struct sock_filter` array (8 bytes per instruction).
    pub program: Vec<u8>,
    /// SECCOMP_FILTER_FLAG_* it was installed with (PTRACE_SECCOMP_GET_METADATA), if known.
    pub flags: Option<u64>,
}

/// The thread's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RseqConfig {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
}

#[derive(Debug, Clone)]
pub struct ThreadState {
    pub tid: i32,
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub regs: arch::regs::ThreadRegs,
    pub blocked: u64,
    pub pending: Vec<PendingSignal>,
    pub shared_pending: Vec<PendingSignal>,
    /// Per-thread credentials (threads may differ after a raw setuid syscall).
    pub creds: super::Creds,
    pub seccomp_mode: u32,
    pub seccomp_filters: Vec<SeccompFilter>,
    /// None if the thread has no rseq area registered.
    pub rseq: Option<RseqConfig>,
    pub sched: super::Sched,
}

fn ptrace_raw(
    req: libc::c_uint,
    tid: i32,
    addr: usize,
    data: *mut libc::c_void,
) -> std::result::Result<libc::c_long, Errno> {
    // SAFETY: callers pass `data` pointing at a buffer at least as large as the request writes.
    let rc = unsafe { libc::ptrace(req as _, tid, addr as *mut libc::c_void, data) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

pub fn sigmask(tid: i32) -> Result<u64> {
    let mut mask = 0u64;
    ptrace_raw(PTRACE_GETSIGMASK, tid, 8, (&mut mask as *mut u64).cast())
        .map_err(|e| Error::from_errno(e, tid, "PTRACE_GETSIGMASK"))?;
    Ok(mask)
}

#[repr(C)]
struct PeekArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// Queued signals, thread-private or (with `shared`) process-wide, oldest first.
pub fn pending(tid: i32, shared: bool) -> Result<Vec<PendingSignal>> {
    let mut out = Vec::new();
    let batch = 32usize;
    let mut buf = vec![0u8; batch * SIGINFO_SIZE];
    loop {
        let mut args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: batch as i32,
        };
        // SAFETY: addr is the args struct, data a buffer of `nr` siginfo slots.
        let rc = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO as _,
                tid,
                &mut args as *mut PeekArgs,
                buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(Error::from_errno(Errno::last(), tid, "PTRACE_PEEKSIGINFO"));
        }
        let n = rc as usize;
        for i in 0..n {
            let raw = buf[i * SIGINFO_SIZE..(i + 1) * SIGINFO_SIZE].to_vec();
            let signo = i32::from_le_bytes(raw[0..4].try_into().unwrap());
            let code = i32::from_le_bytes(raw[8..12].try_into().unwrap());
            out.push(PendingSignal { signo, code, raw });
        }
        if n < batch {
            return Ok(out);
        }
    }
}

#[repr(C)]
struct SeccompMetadata {
    filter_off: u64,
    flags: u64,
}

/// The thread's seccomp filters, oldest first (install order). Empty unless in filter mode (2).
pub fn seccomp_filters(tid: i32, mode: u32) -> Result<Vec<SeccompFilter>> {
    let mut out = Vec::new();
    if mode != 2 {
        return Ok(out);
    }
    for index in 0u32.. {
        let count = match ptrace_raw(
            PTRACE_SECCOMP_GET_FILTER,
            tid,
            index as usize,
            std::ptr::null_mut(),
        ) {
            Ok(n) => n as usize,
            Err(Errno::ENOENT) => break,
            Err(e) => {
                return Err(Error::from_errno(
                    e,
                    tid,
                    format!("PTRACE_SECCOMP_GET_FILTER({index})"),
                ))
            }
        };
        let mut program = vec![0u8; count * 8];
        ptrace_raw(
            PTRACE_SECCOMP_GET_FILTER,
            tid,
            index as usize,
            program.as_mut_ptr().cast(),
        )
        .map_err(|e| Error::from_errno(e, tid, format!("PTRACE_SECCOMP_GET_FILTER({index})")))?;
        let mut md = SeccompMetadata {
            filter_off: index as u64,
            flags: 0,
        };
        let flags = ptrace_raw(
            PTRACE_SECCOMP_GET_METADATA,
            tid,
            std::mem::size_of::<SeccompMetadata>(),
            (&mut md as *mut SeccompMetadata).cast(),
        )
        .ok()
        .map(|_| md.flags);
        out.push(SeccompFilter {
            index,
            program,
            flags,
        });
    }
    Ok(out)
}

#[repr(C)]
#[derive(Default)]
struct RseqRaw {
    rseq_abi_pointer: u64,
    rseq_abi_size: u32,
    signature: u32,
    flags: u32,
    pad: u32,
}

pub fn rseq(tid: i32) -> Result<Option<RseqConfig>> {
    let mut r = RseqRaw::default();
    match ptrace_raw(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<RseqRaw>(),
        (&mut r as *mut RseqRaw).cast(),
    ) {
        Ok(_) if r.rseq_abi_pointer == 0 => Ok(None),
        Ok(_) => Ok(Some(RseqConfig {
            rseq_abi_pointer: r.rseq_abi_pointer,
            rseq_abi_size: r.rseq_abi_size,
            signature: r.signature,
            flags: r.flags,
        })),
        Err(Errno::EIO) | Err(Errno::EINVAL) => Ok(None), // kernel without the request
        Err(e) => Err(Error::from_errno(e, tid, "PTRACE_GET_RSEQ_CONFIGURATION")),
    }
}

/// Thread `tid`'s seccomp mode (/proc/PID/task/TID/status) and, in filter mode, its filters
/// (oldest first); the thread must be in a ptrace stop of ours.
pub fn seccomp_state(pid: i32, tid: i32) -> Result<(u32, Vec<SeccompFilter>)> {
    let file = format!("task/{tid}/status");
    let status = std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| super::io_err(pid, &file, e))?;
    let mode = super::parse::seccomp_mode(&status)
        .ok_or_else(|| crate::error::Error::new(crate::error::ErrorCode::Procfs, format!("pid {pid}: /proc/{pid}/{file}: no Seccomp line")))?;
    Ok((mode, seccomp_filters(tid, mode)?))
}

/// What `thread_state_with` reads beyond what a dump of the thread needs.
#[derive(Debug, Clone, Copy)]
pub struct Extras {
    /// The seccomp filters (the dump reads them in its own stage, before any task).
    pub seccomp_filters: bool,
    /// The process-wide queue (the same for every thread: the dump reads it with the leader).
    pub shared_pending: bool,
}

/// Reads the state of thread `tid` of process `pid`; the thread must be in a ptrace stop of ours.
pub fn thread_state(pid: i32, tid: i32) -> Result<ThreadState> {
    thread_state_with(pid, tid, Extras { seccomp_filters: true, shared_pending: true })
}

/// `thread_state`, leaving out what `extras` does not ask for (left empty).
pub fn thread_state_with(pid: i32, tid: i32, extras: Extras) -> Result<ThreadState> {
    // status has everything of a thread procfs tells here (its stat, read and parsed as well,
    // cost ~20 us a thread)
    let status_file = format!("task/{tid}/status");
    let status = std::fs::read_to_string(format!("/proc/{pid}/{status_file}")).map_err(|e| super::io_err(pid, &status_file, e))?;
    let field = |what: &str| Error::new(ErrorCode::Procfs, format!("pid {pid}: /proc/{pid}/{status_file} has no {what}"));
    let comm = super::parse::status_comm(&status).ok_or_else(|| field("Name"))?;
    let state = super::parse::status_state(&status).ok_or_else(|| field("State"))?;
    let creds = super::parse::creds(&status);
    let seccomp_mode = creds.seccomp_mode;
    let regs = arch::regs::read_thread_regs(tid)?;
    Ok(ThreadState {
        tid,
        pid,
        comm,
        state,
        regs,
        blocked: sigmask(tid)?,
        pending: pending(tid, false)?,
        shared_pending: if extras.shared_pending { pending(tid, true)? } else { Vec::new() },
        creds,
        seccomp_mode,
        seccomp_filters: if extras.seccomp_filters { seccomp_filters(tid, seccomp_mode)? } else { Vec::new() },
        rseq: rseq(tid)?,
        sched: super::read_sched(tid)?,
    })
}
