//! Injection against real children. The seize/release here is the bare minimum a test needs (the
//! real freezer lives in `crate::freezer`); everything runs on the test's own thread because
//! ptrace binds tracees to the attaching thread.

use std::time::Duration;

use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::info;
use super::inject::Injector;
use crate::arch::syscall as sc;

pub(crate) struct Child(pub i32);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.0), None);
    }
}

/// Forks a child running `body` forever (it must not return).
pub(crate) fn spawn(body: fn() -> !) -> Child {
    // SAFETY: the child only calls libc functions before looping; it never returns into the
    // test harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => body(),
        ForkResult::Parent { child } => Child(child.as_raw()),
    }
}

/// PTRACE_SEIZE + PTRACE_INTERRUPT and wait for the interrupt stop.
pub(crate) fn seize(pid: i32) {
    let p = Pid::from_raw(pid);
    ptrace::seize(p, ptrace::Options::empty()).expect("seize");
    ptrace::interrupt(p).expect("interrupt");
    match waitpid(p, Some(WaitPidFlag::__WALL)).expect("wait") {
        WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..) => {}
        s => panic!("unexpected {s:?}"),
    }
}

pub(crate) fn release(pid: i32) {
    ptrace::detach(Pid::from_raw(pid), None).expect("detach");
}

static mut COUNTER: u64 = 0;

extern "C" fn on_usr1(_: libc::c_int) {}

/// Uses 16 KiB of stack below the caller, as any program's start-up does: the borrowed calls'
/// return frame goes there only in pages already in memory (borrow.rs).
#[inline(never)]
fn touch_stack() {
    let mut buf = [0u8; 16384];
    // SAFETY: volatile writes into a local array.
    unsafe { std::ptr::write_volatile(buf.as_mut_ptr().add(100), 1) };
    for b in buf.iter_mut().step_by(512) {
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(b, 1) };
    }
}

fn victim() -> ! {
    touch_stack();
    // SAFETY (whole body): plain libc calls in a freshly forked single-threaded child.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
        libc::sigaddset(&mut sa.sa_mask, libc::SIGUSR2);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        let stack = libc::mmap(std::ptr::null_mut(), 65536, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        let ss = libc::stack_t { ss_sp: stack, ss_flags: 0, ss_size: 65536 };
        libc::sigaltstack(&ss, std::ptr::null_mut());
        let it = libc::itimerval {
            it_interval: libc::timeval { tv_sec: 100, tv_usec: 0 },
            it_value: libc::timeval { tv_sec: 200, tv_usec: 0 },
        };
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_SIGNAL;
        sev.sigev_signo = libc::SIGUSR1;
        let mut tid: libc::timer_t = std::ptr::null_mut();
        libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut tid);
        let its = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 50, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: 60, tv_nsec: 0 },
        };
        libc::timer_settime(tid, 0, &its, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_NAME, c"victim".as_ptr());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR2);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        libc::umask(0o027);
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigaddset(&mut block, libc::SIGHUP);
        libc::sigprocmask(libc::SIG_BLOCK, &block, std::ptr::null_mut());
        loop {
            std::ptr::write_volatile(&raw mut COUNTER, std::ptr::read_volatile(&raw const COUNTER) + 1);
        }
    }
}

fn sleeper() -> ! {
    touch_stack();
    // SAFETY: plain libc call in the forked child.
    loop {
        unsafe { libc::pause() };
    }
}

/// Waits until `pid` has `threads` threads, each done setting itself up: the last step of
/// `victim` and of every `worker` blocks one signal, so a SigBlk of exactly one signal says so (a
/// fixed sleep was not enough on a loaded machine). Not just a non-empty one: newer glibc (2.41,
/// Debian 13) blocks every signal for a moment inside fork() and pthread_create().
fn wait_set_up(pid: i32, threads: usize) {
    let blocked = |tid: &str| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        s.lines().find_map(|l| l.strip_prefix("SigBlk:")).is_some_and(|v| u64::from_str_radix(v.trim(), 16).is_ok_and(|m| m.count_ones() == 1))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let tids: Vec<String> =
            std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        if tids.len() == threads && tids.iter().all(|t| blocked(t)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "pid {pid} never finished setting up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn maps(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap()
}

/// Whether `pid`'s loop counts on (polled: a loaded machine may not run it for a while).
fn counts_on(pid: i32) -> bool {
    let c0 = counter(pid);
    (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        counter(pid) > c0
    })
}

fn counter(pid: i32) -> u64 {
    let mut b = [0u8; 8];
    let remote = [nix::sys::uio::RemoteIoVec { base: &raw const COUNTER as usize, len: 8 }];
    nix::sys::uio::process_vm_readv(Pid::from_raw(pid), &mut [std::io::IoSliceMut::new(&mut b)], &remote).unwrap();
    u64::from_ne_bytes(b)
}

#[test]
fn info_is_read_and_the_cure_is_invisible() {
    let child = spawn(victim);
    let pid = child.0;
    wait_set_up(pid, 1);
    seize(pid);
    let regs_before = sc::get_regs(pid).unwrap();
    let fpu_before = sc::read_xstate(pid).unwrap();
    let maps_before = maps(pid);
    let c0 = counter(pid);

    let mut inj = Injector::infect(pid, super::inject::DEFAULT_SCRATCH).unwrap();
    assert_ne!(maps(pid), maps_before, "scratch mapping should be visible while infected");
    let ti = info::collect(&mut inj, None, &info::TaskKnown::read(pid, &[pid]).unwrap()).unwrap();
    inj.cure().unwrap();

    let usr1 = &ti.sigactions[libc::SIGUSR1 as usize - 1];
    assert_eq!(usr1.handler, on_usr1 as *const () as usize as u64);
    assert_ne!(usr1.flags & libc::SA_SIGINFO as u64, 0);
    assert_eq!(usr1.mask, 1 << (libc::SIGUSR2 - 1));
    assert!(ti.sigactions[libc::SIGKILL as usize - 1].fixed);
    assert_eq!(ti.sigactions.len(), 64);
    assert_eq!(ti.itimers.real.interval.sec, 100);
    assert!(ti.itimers.real.value.sec > 190 && ti.itimers.real.value.sec <= 200);
    assert_eq!(ti.posix_timers.len(), 1);
    assert_eq!(ti.posix_timers[0].signo, libc::SIGUSR1);
    assert_eq!(ti.posix_timers[0].clock_id, libc::CLOCK_MONOTONIC);
    assert_eq!(ti.posix_timers[0].interval.sec, 50);
    let t = &ti.threads[0];
    assert_eq!(t.name, "victim");
    assert_eq!(t.pdeath_sig, libc::SIGUSR2);
    assert_eq!(t.altstack_size, 65536);
    assert_ne!(t.altstack_sp, 0);
    assert_eq!(t.blocked, 1 << (libc::SIGHUP - 1));
    assert_eq!(t.creds.uid, nix::unistd::getuid().as_raw());
    assert_eq!(t.creds.fsuid, nix::unistd::getuid().as_raw());
    assert_eq!(ti.misc.umask, 0o027);
    assert!(ti.misc.child_subreaper);
    assert_eq!(ti.misc.dumpable, 1);
    assert!(inj.calls > 64);

    // The cure: registers, mask, map all as before; the umask round trip left no trace.
    let regs_after = sc::get_regs(pid).unwrap();
    assert_eq!(format!("{regs_before:?}"), format!("{regs_after:?}"));
    assert_eq!(sc::read_xstate(pid).unwrap(), fpu_before, "FPU/vector state untouched");
    assert_eq!(maps(pid), maps_before);
    assert_eq!(counter(pid), c0);
    release(pid);
    std::thread::sleep(Duration::from_millis(50));
    assert!(counter(pid) > c0, "the task carries on after release");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("SigBlk:\t0000000000000001"), "{status}");
    assert!(status.contains("TracerPid:\t0"));
    assert!(status.contains("Umask:\t0027"));
}

#[test]
fn a_task_stopped_in_a_syscall_restarts_it_after_the_cure() {
    let child = spawn(sleeper);
    let pid = child.0;
    std::thread::sleep(Duration::from_millis(50));
    seize(pid);
    let before = sc::get_regs(pid).unwrap();
    let mut inj = Injector::infect(pid, 4096 * 4).unwrap();
    let r = inj.syscall(pid, crate::arch::nr::GETPID, [0; 6]).unwrap();
    assert_eq!(r, pid as i64);
    // A failing call is reported as an error and changes nothing.
    let e = inj.syscall_ok(pid, crate::arch::nr::CLOSE, [100_000, 0, 0, 0, 0, 0], "close").unwrap_err();
    assert!(e.message.contains("Bad file"), "{e}");
    inj.cure().unwrap();
    assert_eq!(format!("{before:?}"), format!("{:?}", sc::get_regs(pid).unwrap()));
    release(pid);
    // pause() restarted: the task sleeps again and a signal still reaches it normally.
    std::thread::sleep(Duration::from_millis(50));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.contains(") S "), "{stat}");
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert!(matches!(waitpid(Pid::from_raw(pid), None).unwrap(), WaitStatus::Signaled(_, Signal::SIGTERM, _)));
    std::mem::forget(child);
}

#[test]
fn a_dead_target_is_reported_not_hung_on() {
    let child = spawn(sleeper);
    let pid = child.0;
    std::thread::sleep(Duration::from_millis(50));
    seize(pid);
    let mut inj = Injector::infect(pid, 4096).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let e = inj.syscall(pid, crate::arch::nr::GETPID, [0; 6]).unwrap_err();
    assert!(matches!(e.code, crate::ErrorCode::TargetGone | crate::ErrorCode::EsrchTarget), "{e}");
    assert!(inj.cure().is_err());
}

/// Forks a "tsdump" process that seizes `target`, infects it and starts an injected 400 ms
/// nanosleep in it; SIGKILLs that process while the target is inside our code.
fn kill_tracer_mid_syscall(target: i32, framed: bool) {
    let (rd, wr) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only runs injection code and exits; it never returns into the harness.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            seize(target);
            let mut inj = Injector::infect(target, 64 * 1024).unwrap();
            inj.set_framed(framed);
            inj.syscall(target, crate::arch::nr::GETPID, [0; 6]).unwrap();
            let ts: [u64; 2] = [0, 400_000_000];
            let off = Injector::DATA_OFFSET;
            inj.write(off, &[ts[0].to_ne_bytes(), ts[1].to_ne_bytes()].concat()).unwrap();
            nix::unistd::write(&wr, b"x").unwrap();
            let _ = inj.syscall(target, crate::arch::nr::NANOSLEEP, [inj.remote(off), 0, 0, 0, 0, 0]);
            // Not reached in time: the parent kills us during the sleep.
            std::process::exit(3);
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut b = [0u8; 1];
            assert_eq!(nix::unistd::read(&rd, &mut b).unwrap(), 1);
            std::thread::sleep(Duration::from_millis(100));
            kill(child, Signal::SIGKILL).unwrap();
            assert!(matches!(waitpid(child, None).unwrap(), WaitStatus::Signaled(_, Signal::SIGKILL, _)));
        }
    }
}

fn status_field(pid: i32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("").trim().to_string()
}

#[test]
fn the_task_carries_on_when_tsdump_is_sigkilled_mid_syscall() {
    let child = spawn(victim);
    let pid = child.0;
    wait_set_up(pid, 1);
    let blocked = status_field(pid, "SigBlk:");
    kill_tracer_mid_syscall(pid, true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status_field(pid, "TracerPid:"), "0");
    assert_eq!(status_field(pid, "SigBlk:"), blocked, "signal mask back from the frame");
    let c0 = counter(pid);
    std::thread::sleep(Duration::from_millis(50));
    assert!(counter(pid) > c0, "the task runs its own loop again");
    assert!(status_field(pid, "State:").starts_with('R'));

    // A task that was inside a restartable syscall (pause) goes back into it, and still reacts
    // to signals as before.
    let sleeper_child = spawn(sleeper);
    let spid = sleeper_child.0;
    std::thread::sleep(Duration::from_millis(50));
    kill_tracer_mid_syscall(spid, true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status_field(spid, "TracerPid:"), "0");
    assert!(status_field(spid, "State:").starts_with('S'), "back in pause()");
    kill(Pid::from_raw(spid), Signal::SIGTERM).unwrap();
    assert!(matches!(waitpid(Pid::from_raw(spid), None).unwrap(), WaitStatus::Signaled(_, Signal::SIGTERM, _)));
    std::mem::forget(sleeper_child);
}

#[test]
fn without_the_frame_the_same_kill_takes_the_task_down() {
    // The control experiment: the trap protocol (what CRIU's compel does for single syscalls)
    // leaves the task to hit int3 untraced.
    let child = spawn(sleeper);
    let pid = child.0;
    std::thread::sleep(Duration::from_millis(50));
    kill_tracer_mid_syscall(pid, false);
    let st = waitpid(Pid::from_raw(pid), None).unwrap();
    assert!(matches!(st, WaitStatus::Signaled(_, Signal::SIGTRAP, _)), "{st:?}");
    std::mem::forget(child);
}

fn fd_table(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            format!("{} -> {}", e.file_name().to_string_lossy(), std::fs::read_link(e.path()).unwrap().display())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_resident_parasite_serves_and_its_cure_is_invisible() {
    use super::blob::Blob;
    let child = spawn(victim);
    let pid = child.0;
    wait_set_up(pid, 1);
    seize(pid);
    let (regs_before, maps_before, fds_before, c0) = (sc::get_regs(pid).unwrap(), maps(pid), fd_table(pid), counter(pid));
    let fpu_before = sc::read_xstate(pid).unwrap();
    let mut inj = Injector::infect(pid, super::inject::DEFAULT_SCRATCH).unwrap();
    let mut blob = Blob::start(&mut inj).unwrap();
    assert_eq!(blob.syscall(&mut inj, crate::arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
    let pipes = blob.pipes(&mut inj, 2, 1 << 20).unwrap();
    assert_eq!(pipes.len(), 2);
    assert_eq!(fd_table(pid).len(), fds_before.len() + 5, "two pipes and the channel");
    // Gift the page holding COUNTER to the first pipe and read it back through /proc.
    let page = (&raw const COUNTER as u64) & !4095;
    let gifted = blob.vmsplice(&mut inj, pipes[0].1, &[(page, 4096)], libc::SPLICE_F_GIFT | libc::SPLICE_F_NONBLOCK).unwrap();
    assert_eq!(gifted, 4096);
    let mut got = vec![0u8; 4096];
    let mut rd = std::fs::File::open(format!("/proc/{pid}/fd/{}", pipes[0].0)).unwrap();
    std::io::Read::read_exact(&mut rd, &mut got).unwrap();
    let off = (&raw const COUNTER as u64 - page) as usize;
    assert_eq!(u64::from_ne_bytes(got[off..off + 8].try_into().unwrap()), c0);
    // Only the blob's own pipes take vmsplice.
    assert!(blob.vmsplice(&mut inj, 0, &[(page, 4096)], 0).unwrap() < 0);
    assert!(blob.round_trips >= 5);
    blob.stop(&mut inj).unwrap();
    inj.cure().unwrap();
    assert_eq!(format!("{regs_before:?}"), format!("{:?}", sc::get_regs(pid).unwrap()));
    assert_eq!(sc::read_xstate(pid).unwrap(), fpu_before, "the blob leaves FPU/vector registers alone");
    assert_eq!(maps(pid), maps_before);
    assert_eq!(fd_table(pid), fds_before);
    assert_eq!(counter(pid), c0);
    release(pid);
    std::thread::sleep(Duration::from_millis(50));
    assert!(counter(pid) > c0, "the task carries on after release");
    assert_eq!(status_field(pid, "SigBlk:"), "0000000000000001");
}

/// Forks a "tsdump" that seizes `target`, starts the resident parasite in it with two pipes and
/// then waits; SIGKILLs that process while the blob is serving.
fn kill_tracer_with_resident_parasite(target: i32) {
    let (rd, wr) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only runs injection code and sleeps; it never returns into the harness.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            seize(target);
            let mut inj = Injector::infect(target, super::inject::DEFAULT_SCRATCH).unwrap();
            let mut blob = super::blob::Blob::start(&mut inj).unwrap();
            blob.pipes(&mut inj, 2, 1 << 20).unwrap();
            nix::unistd::write(&wr, b"x").unwrap();
            std::thread::sleep(Duration::from_secs(30));
            std::process::exit(3);
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut b = [0u8; 1];
            assert_eq!(nix::unistd::read(&rd, &mut b).unwrap(), 1);
            kill(child, Signal::SIGKILL).unwrap();
            assert!(matches!(waitpid(child, None).unwrap(), WaitStatus::Signaled(_, Signal::SIGKILL, _)));
        }
    }
}

#[test]
fn the_resident_parasite_goes_home_when_tsdump_is_sigkilled() {
    let child = spawn(victim);
    let pid = child.0;
    wait_set_up(pid, 1);
    let (blocked, fds_before, maps_before) = (status_field(pid, "SigBlk:"), fd_table(pid), maps(pid));
    kill_tracer_with_resident_parasite(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status_field(pid, "TracerPid:"), "0");
    assert_eq!(status_field(pid, "SigBlk:"), blocked, "signal mask back from the frame");
    assert_eq!(fd_table(pid), fds_before, "the blob closed its pipes and its socket");
    let was: std::collections::HashSet<&str> = maps_before.lines().collect();
    let now = maps(pid);
    let extra: Vec<&str> = now.lines().filter(|l| !was.contains(l)).collect();
    assert_eq!(extra.len(), 1, "only the scratch mapping is left: {extra:?}");
    let c0 = counter(pid);
    std::thread::sleep(Duration::from_millis(50));
    assert!(counter(pid) > c0, "the task runs its own loop again");
    // The frame carried the thread's sigaltstack (written into it by the thread's first call).
    seize(pid);
    let mut inj = Injector::infect(pid, super::inject::DEFAULT_SCRATCH).unwrap();
    let ti = info::collect(&mut inj, None, &info::TaskKnown::read(pid, &[pid]).unwrap()).unwrap();
    inj.cure().unwrap();
    release(pid);
    assert_eq!(ti.threads[0].altstack_size, 65536);

    // A task that was inside a restartable syscall (pause) goes back into it.
    let sleeper_child = spawn(sleeper);
    let spid = sleeper_child.0;
    std::thread::sleep(Duration::from_millis(50));
    let sfds = fd_table(spid);
    kill_tracer_with_resident_parasite(spid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status_field(spid, "TracerPid:"), "0");
    assert!(status_field(spid, "State:").starts_with('S'), "back in pause()");
    assert_eq!(fd_table(spid), sfds);
    kill(Pid::from_raw(spid), Signal::SIGTERM).unwrap();
    assert!(matches!(waitpid(Pid::from_raw(spid), None).unwrap(), WaitStatus::Signaled(_, Signal::SIGTERM, _)));
    std::mem::forget(sleeper_child);
}

fn fd_starved() -> ! {
    // SAFETY: plain libc calls in the forked child: close everything above stderr and allow no
    // new descriptor, so the parasite's socket() fails with EMFILE.
    unsafe {
        for fd in 3..1024 {
            libc::close(fd);
        }
        let lim = libc::rlimit { rlim_cur: 3, rlim_max: 3 };
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        loop {
            std::ptr::write_volatile(&raw mut COUNTER, std::ptr::read_volatile(&raw const COUNTER) + 1);
        }
    }
}

#[test]
fn a_resident_parasite_that_cannot_connect_leaves_the_task_as_it_was() {
    let child = spawn(fd_starved);
    let pid = child.0;
    std::thread::sleep(Duration::from_millis(100));
    seize(pid);
    let (regs_before, fds_before, fpu_before) = (sc::get_regs(pid).unwrap(), fd_table(pid), sc::read_xstate(pid).unwrap());
    let mut inj = Injector::infect(pid, super::inject::DEFAULT_SCRATCH).unwrap();
    let err = super::blob::Blob::start(&mut inj).err().expect("socket() must fail at RLIMIT_NOFILE 3");
    assert!(err.message.contains("socket()") && err.message.contains("Too many open files"), "{err}");
    // The failure was caught in a stop: the thread is back as it was and still takes calls.
    assert_eq!(inj.syscall(pid, crate::arch::nr::GETPID, [0; 6]).unwrap(), pid as i64);
    inj.cure().unwrap();
    assert_eq!(format!("{regs_before:?}"), format!("{:?}", sc::get_regs(pid).unwrap()));
    assert_eq!(sc::read_xstate(pid).unwrap(), fpu_before);
    assert_eq!(fd_table(pid), fds_before);
    let c0 = counter(pid);
    release(pid);
    std::thread::sleep(Duration::from_millis(50));
    assert!(counter(pid) > c0, "the task carries on");
    assert_eq!(status_field(pid, "TracerPid:"), "0");
}

extern "C" fn worker(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY (whole body): plain libc calls in a thread of the forked child.
    unsafe {
        let i = arg as usize;
        let stack = libc::mmap(std::ptr::null_mut(), 16384, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        let ss = libc::stack_t { ss_sp: stack, ss_flags: 0, ss_size: 16384 + i * 4096 };
        libc::sigaltstack(&ss, std::ptr::null_mut());
        let name = format!("worker-{i}\0");
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        libc::prctl(libc::PR_SET_PDEATHSIG, i as libc::c_ulong);
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigaddset(&mut block, i as libc::c_int + 1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, std::ptr::null_mut());
        loop {
            if i.is_multiple_of(2) {
                libc::pause();
            } else {
                std::ptr::write_volatile(&raw mut COUNTER, std::ptr::read_volatile(&raw const COUNTER) + 1);
            }
        }
    }
}

/// `victim` with five more threads, each with its own altstack, name, pdeath signal and mask;
/// the even ones sleep in pause(), the odd ones spin.
fn threaded_victim() -> ! {
    for i in 1..=5usize {
        let mut t: libc::pthread_t = 0;
        // SAFETY: pthread_create with a static function and an integer argument.
        unsafe { libc::pthread_create(&mut t, std::ptr::null(), worker, i as *mut libc::c_void) };
    }
    victim()
}

fn tids(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> =
        std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn the_blob_and_its_thread_entries_answer_as_single_syscalls_do() {
    use super::blob::Blob;
    let child = spawn(threaded_victim);
    let pid = child.0;
    wait_set_up(pid, 6);
    let tids = tids(pid);
    assert_eq!(tids.len(), 6);
    for &t in &tids {
        let p = Pid::from_raw(t);
        ptrace::seize(p, ptrace::Options::empty()).unwrap();
        ptrace::interrupt(p).unwrap();
        assert!(matches!(waitpid(p, Some(WaitPidFlag::__WALL)).unwrap(), WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..)));
    }
    let before: Vec<_> = tids.iter().map(|&t| (format!("{:?}", sc::get_regs(t).unwrap()), sc::read_xstate(t).unwrap())).collect();
    let (maps_before, fds_before) = (maps(pid), fd_table(pid));
    let known = info::TaskKnown::read(pid, &tids).unwrap();

    let mut inj = Injector::infect(pid, super::inject::DEFAULT_SCRATCH).unwrap();
    let single = info::collect(&mut inj, None, &known).unwrap();
    inj.cure().unwrap();
    // two slots for five threads: batches of two, two and one
    let mut inj = Injector::infect_with_slots(pid, super::inject::DEFAULT_SCRATCH, 2).unwrap();
    let mut blob = Blob::start(&mut inj).unwrap();
    let calls_before = inj.calls;
    let fast = info::collect(&mut inj, Some(&mut blob), &known).unwrap();
    assert!(inj.calls - calls_before <= 5, "one start per thread, no single syscalls: {}", inj.calls - calls_before);
    blob.stop(&mut inj).unwrap();
    inj.cure().unwrap();

    let after: Vec<_> = tids.iter().map(|&t| (format!("{:?}", sc::get_regs(t).unwrap()), sc::read_xstate(t).unwrap())).collect();
    let (maps_after, fds_after) = (maps(pid), fd_table(pid));
    for &t in &tids {
        ptrace::detach(Pid::from_raw(t), None).unwrap();
    }
    // Timers run on while the task is frozen: compare them apart.
    let untimed = |mut i: info::TaskInfo| {
        i.itimers.real.value = info::TimeVal::default();
        i.posix_timers.iter_mut().for_each(|t| t.value = info::TimeVal::default());
        i
    };
    assert!(fast.itimers.real.value.sec > 190 && fast.posix_timers[0].value.sec > 50);
    assert_eq!(untimed(fast.clone()), untimed(single));
    assert_eq!(fast.threads.len(), 6);
    for (i, t) in fast.threads.iter().enumerate().skip(1) {
        assert_eq!(t.name, format!("worker-{i}"));
        assert_eq!(t.altstack_size, 16384 + i as u64 * 4096);
        assert_eq!(t.pdeath_sig, i as i32);
        assert_eq!(t.blocked, 1 << i, "the mask before injection");
    }
    assert_eq!(fast.misc.umask, 0o027);
    assert_eq!(after, before, "registers and FPU state of every thread");
    assert_eq!(maps_after, maps_before);
    assert_eq!(fds_after, fds_before);
    assert!(counts_on(pid), "the task carries on");
    for &t in &tids[1..] {
        let s = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/status")).unwrap();
        assert!(!s.contains("TracerPid:\t1") && s.contains("TracerPid:\t0"));
    }
}

/// Forks a "tsdump" that seizes `target` and stalls at fault point `point` (with `leave`: after
/// a whole infection left its scratch, in the munmap of that scratch); SIGKILLs it there.
fn kill_tracer_at(target: i32, point: &'static str) {
    let (rd, wr) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only runs injection code and exits; it never returns into the harness.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // the fault point's line goes to the pipe
            // SAFETY: dup2 onto stderr in the forked child, which owns both descriptors.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&wr), 2) };
            seize(target);
            super::borrow::stall_at(Some(point));
            let inj = Injector::infect(target, 64 * 1024).unwrap();
            let left = inj.leave().unwrap();
            let _ = Injector::adopt(left).unwrap().cure();
            std::process::exit(3);
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut line = [0u8; 128];
            let n = nix::unistd::read(&rd, &mut line).unwrap();
            let line = String::from_utf8_lossy(&line[..n]).into_owned();
            assert!(line.contains(&format!("fault point {point}: stalled")), "{line}");
            kill(child, Signal::SIGKILL).unwrap();
            assert!(matches!(waitpid(child, None).unwrap(), WaitStatus::Signaled(_, Signal::SIGKILL, _)));
        }
    }
}

/// The bytes of every private executable file mapping of `pid`.
fn text_of(pid: i32) -> Vec<(String, Vec<u8>)> {
    maps(pid)
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.starts_with("r-xp")) && !l.ends_with(']'))
        .map(|l| {
            let (a, b) = l.split_whitespace().next().unwrap().split_once('-').unwrap();
            let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
            let mut buf = vec![0u8; (b - a) as usize];
            let remote = [nix::sys::uio::RemoteIoVec { base: a as usize, len: buf.len() }];
            nix::sys::uio::process_vm_readv(Pid::from_raw(pid), &mut [std::io::IoSliceMut::new(&mut buf)], &remote).unwrap();
            (l.to_string(), buf)
        })
        .collect()
}

#[test]
fn a_tsdump_killed_inside_the_scratch_mmap_or_munmap_leaves_the_task_running_its_own_code() {
    for point in ["mmap-entered", "mmap-exited", "munmap-entered", "munmap-exited"] {
        for body in [victim as fn() -> !, sleeper] {
            let child = spawn(body);
            let pid = child.0;
            std::thread::sleep(Duration::from_millis(100));
            let (blocked, text) = (status_field(pid, "SigBlk:"), text_of(pid));
            let spot = super::borrow::find_spot(pid, &crate::mem::vma::read_vmas(pid).unwrap()).unwrap();
            kill_tracer_at(pid, point);
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(status_field(pid, "TracerPid:"), "0", "{point}");
            assert_eq!(status_field(pid, "SigBlk:"), blocked, "{point}: mask back from the frame");
            if std::ptr::fn_addr_eq(body, victim as fn() -> !) {
                assert!(counts_on(pid), "{point}: the task runs its own loop again ({})", status_field(pid, "State:"));
            } else {
                assert!(status_field(pid, "State:").starts_with('S'), "{point}: back in pause()");
            }
            // Only the 16 bytes of code may be left behind (see borrow.rs).
            for ((line, was), (_, now)) in text.iter().zip(text_of(pid)) {
                let start = u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
                for (i, (a, b)) in was.iter().zip(&now).enumerate() {
                    let at = start + i as u64;
                    let code = (spot.at..spot.at + super::borrow::CODE_LEN as u64).contains(&at);
                    assert!(a == b || code, "{point}: {line}: byte {i:#x} changed from {a:#x} to {b:#x}");
                }
            }
        }
    }
}

#[test]
fn the_scratch_code_never_goes_into_a_shared_mapping() {
    fn shared_text() -> ! {
        // SAFETY: plain libc calls in the forked child: a shared executable file mapping below
        // every other, where the old code put its borrowed bytes (the first executable mapping).
        unsafe {
            let path = c"/dev/shm/tsdump-core-test-shared-text";
            let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o600);
            libc::ftruncate(fd, 8192);
            libc::mmap(0x10000 as *mut libc::c_void, 8192, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC, libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE, fd, 0);
            libc::close(fd);
        }
        sleeper()
    }
    let child = spawn(shared_text);
    let pid = child.0;
    std::thread::sleep(Duration::from_millis(100));
    assert!(maps(pid).contains("rwxs"), "{}", maps(pid));
    kill_tracer_at(pid, "mmap-exited");
    seize(pid);
    let inj = Injector::infect(pid, 64 * 1024).unwrap();
    Injector::adopt(inj.leave().unwrap()).unwrap().cure().unwrap();
    release(pid);
    let file = std::fs::read("/dev/shm/tsdump-core-test-shared-text").unwrap();
    let _ = std::fs::remove_file("/dev/shm/tsdump-core-test-shared-text");
    assert!(file.iter().all(|&b| b == 0), "the shared file got bytes written into it");
}
