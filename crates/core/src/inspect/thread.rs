//! Per-thread state of a seized (ptrace-stopped) thread: registers, signal mask, pending
//! signals, seccomp filters, rseq registration, scheduling.

use nix::errno::Errno;

use crate::arch;
use crate::error::{Error, Result};

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
    let rc = unsafe { libc::ptrace(req, tid, addr as *mut libc::c_void, data) };
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
                PTRACE_PEEKSIGINFO,
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

/// Reads the state of thread `tid` of process `pid`; the thread must be in a ptrace stop of ours.
pub fn thread_state(pid: i32, tid: i32) -> Result<ThreadState> {
    let task = procfs::process::Process::new(pid)
        .and_then(|p| p.task_from_tid(tid))
        .map_err(|e| super::procfs_err(pid, &format!("task/{tid}"), e))?;
    let stat = task
        .stat()
        .map_err(|e| super::procfs_err(pid, &format!("task/{tid}/stat"), e))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .map_err(|e| super::io_err(pid, &format!("task/{tid}/status"), e))?;
    use procfs::FromRead;
    let parsed = procfs::process::Status::from_read(status.as_bytes())
        .map_err(|e| super::procfs_err(pid, &format!("task/{tid}/status"), e))?;
    let creds = super::creds_from_status(&parsed, &status);
    let seccomp_mode = super::parse::status_field(&status, "Seccomp")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let regs = arch::regs::read_thread_regs(tid)?;
    let st = ThreadState {
        tid,
        pid,
        comm: stat.comm,
        state: stat.state,
        regs,
        blocked: sigmask(tid)?,
        pending: pending(tid, false)?,
        shared_pending: pending(tid, true)?,
        creds,
        seccomp_mode,
        seccomp_filters: seccomp_filters(tid, seccomp_mode)?,
        rseq: rseq(tid)?,
        sched: super::read_sched(tid)?,
    };
    Ok(st)
}
