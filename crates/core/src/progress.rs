//! How far the page drain has got, for a display on another thread: the drain adds the bytes of
//! each pipe load (or buffer) it hands to the sink, and anyone holding the counter reads it
//! without a round trip to the tracer thread. Like `cancel`, the counter is installed on the
//! thread that runs the drain; a thread without one counts into a counter nobody reads.

use std::cell::RefCell;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Progress {
    pid: AtomicI32,
    /// Bytes of the current task's drain handed to the sink, and its total (from the page scan).
    done: AtomicU64,
    total: AtomicU64,
    /// Bytes drained by this counter's thread over its whole life (every task of a dump).
    all: AtomicU64,
}

/// One reading of a Progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The task being (or last) drained; 0 before the first.
    pub pid: i32,
    pub done: u64,
    pub total: u64,
    pub all: u64,
}

impl Progress {
    /// A drain of `total` bytes of `pid` begins.
    pub fn start(&self, pid: i32, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.pid.store(pid, Ordering::Release);
    }

    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.all.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let pid = self.pid.load(Ordering::Acquire);
        Snapshot { pid, done: self.done.load(Ordering::Relaxed), total: self.total.load(Ordering::Relaxed), all: self.all.load(Ordering::Relaxed) }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Progress>>> = const { RefCell::new(None) };
}

/// Makes `p` the counter of drains run on the calling thread.
pub fn install(p: Arc<Progress>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(p));
}

/// The calling thread's counter (a fresh one, read by nobody, on a thread without one).
pub fn current() -> Arc<Progress> {
    CURRENT.with(|c| c.borrow().clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_task_and_over_the_life() {
        let p = Arc::new(Progress::default());
        install(p.clone());
        current().start(7, 8192);
        current().add(4096);
        assert_eq!(p.snapshot(), Snapshot { pid: 7, done: 4096, total: 8192, all: 4096 });
        current().start(8, 4096);
        current().add(4096);
        assert_eq!(p.snapshot(), Snapshot { pid: 8, done: 4096, total: 4096, all: 8192 });
        std::thread::spawn(|| assert!(!Arc::ptr_eq(&current(), &current()), "no counter installed: a fresh one each time")).join().unwrap();
    }
}
