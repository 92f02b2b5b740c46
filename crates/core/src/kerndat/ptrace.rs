//! ptrace probes: seize a throwaway child and try the requests a dump needs.

use nix::errno::Errno;

use super::Probe;

const PTRACE_SEIZE: libc::c_uint = 0x4206;
const PTRACE_INTERRUPT: libc::c_uint = 0x4207;
const PTRACE_SETOPTIONS: libc::c_uint = 0x4200;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_O_SUSPEND_SECCOMP: libc::c_long = 1 << 21;

fn ptrace(req: libc::c_uint, pid: libc::pid_t, addr: usize, data: usize) -> Result<libc::c_long, Errno> {
    // SAFETY: raw ptrace on a child we forked; addr/data point at live buffers sized for `req`.
    let r = unsafe { libc::ptrace(req as _, pid, addr as *mut libc::c_void, data as *mut libc::c_void) };
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// Forks a child that only sleeps, runs the ptrace probes on it, then kills and reaps it.
pub(super) fn probe() -> Vec<Probe> {
    let names = ["ptrace_seize", "get_rseq_conf", "ptrace_sigmask", "ptrace_syscall_info", "seccomp_suspend"];
    // SAFETY: the child calls only async-signal-safe syscalls (prctl, pause, _exit) before dying.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = Errno::last();
        return names.iter().map(|n| Probe::from_errno(n, "fork", e)).collect();
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls only, in the forked child.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            loop {
                libc::pause();
            }
        }
    }
    let out = probe_child(pid, &names);
    // SAFETY: pid is our own child; killing and reaping it is the probe's cleanup.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, libc::__WALL) == -1 && Errno::last() == Errno::EINTR {}
    }
    out
}

fn probe_child(pid: libc::pid_t, names: &[&'static str; 5]) -> Vec<Probe> {
    if let Err(e) = ptrace(PTRACE_SEIZE, pid, 0, 0) {
        return names.iter().map(|n| Probe::from_errno(n, "PTRACE_SEIZE", e)).collect();
    }
    let mut out = vec![Probe::yes(names[0], format!("seized child {pid}"))];
    if let Err(e) = ptrace(PTRACE_INTERRUPT, pid, 0, 0) {
        out.extend(names[1..].iter().map(|n| Probe::from_errno(n, "PTRACE_INTERRUPT", e)));
        return out;
    }
    let mut status = 0;
    // SAFETY: waiting for the group-stop of our own traced child.
    if unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } != pid {
        let e = Errno::last();
        out.extend(names[1..].iter().map(|n| Probe::from_errno(n, "waitpid", e)));
        return out;
    }

    // struct ptrace_rseq_configuration: u64 rseq_abi_pointer, u32 len, sig, flags, pad
    let mut rseq = [0u8; 32];
    out.push(match ptrace(PTRACE_GET_RSEQ_CONFIGURATION, pid, rseq.len(), rseq.as_mut_ptr() as usize) {
        Ok(n) => Probe::yes(names[1], format!("{n}-byte configuration")),
        Err(e) => Probe::from_errno(names[1], "PTRACE_GET_RSEQ_CONFIGURATION", e),
    });

    let mut mask = 0u64;
    out.push(match ptrace(PTRACE_GETSIGMASK, pid, 8, &mut mask as *mut u64 as usize) {
        Ok(_) => Probe::yes(names[2], format!("blocked mask {mask:#x}")),
        Err(e) => Probe::from_errno(names[2], "PTRACE_GETSIGMASK", e),
    });

    // struct ptrace_syscall_info is 88 bytes on 64-bit kernels; a larger buffer is allowed
    let mut info = [0u8; 128];
    out.push(match ptrace(PTRACE_GET_SYSCALL_INFO, pid, info.len(), info.as_mut_ptr() as usize) {
        Ok(n) => Probe::yes(names[3], format!("{n}-byte record")),
        Err(e) => Probe::from_errno(names[3], "PTRACE_GET_SYSCALL_INFO", e),
    });

    out.push(match ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_SUSPEND_SECCOMP as usize) {
        Ok(_) => Probe::yes(names[4], "PTRACE_O_SUSPEND_SECCOMP accepted"),
        Err(e) => Probe::from_errno(names[4], "PTRACE_O_SUSPEND_SECCOMP", e),
    });
    out
}
