//! How far the page drain has got, for a display on another thread: the drain adds the bytes of
//! each pipe load (or buffer) it hands to the sink, and anyone holding the counter reads it
//! without a round trip to the tracer thread. Like `cancel`, the counter is installed on the
//! thread that runs the drain; a thread without one counts into a counter nobody reads.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};

/// One lock over the four numbers, so that a reading never pairs a task with another's counts (as
/// separate atomics could, between two tasks' drains). It is taken once per pipe load and once per
/// poll, never contended for longer than a few stores.
#[derive(Debug, Default)]
pub struct Progress(Mutex<Snapshot>);

/// One reading of a Progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The task being (or last) drained; 0 before the first.
    pub pid: i32,
    /// Bytes of that task's drain handed to the sink, and its total (from the page scan).
    pub done: u64,
    pub total: u64,
    /// Bytes drained by this counter's thread over its whole life (every task of a dump).
    pub all: u64,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        // plain numbers: a panic elsewhere leaves them whole
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A drain of `total` bytes of `pid` begins.
    pub fn start(&self, pid: i32, total: u64) {
        let mut s = self.lock();
        (s.pid, s.done, s.total) = (pid, 0, total);
    }

    pub fn add(&self, bytes: u64) {
        let mut s = self.lock();
        s.done += bytes;
        s.all += bytes;
    }

    pub fn snapshot(&self) -> Snapshot {
        *self.lock()
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
