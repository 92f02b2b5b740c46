//! A dump session owns one tracer thread. ptrace binds a tracee to the *thread* that attached it,
//! so every request for a session's tasks must come from the same OS thread; running them there
//! also keeps Node's event loop free (progress, signals, AbortSignal) while the kernel works.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::sync::oneshot;

use crate::errors::to_napi;

/// State owned by the tracer thread. Modules add their own fields here.
#[derive(Default)]
pub struct TracerState {
    /// The process tree this session has seized (crate::seize).
    pub tree: Option<tsdump_core::freezer::SeizedTree>,
    /// The page server a dump sends its memory to (crate::memory), held from the first task's
    /// drain to `closePageServer`.
    pub page_server: Option<tsdump_core::pageserver::PageServerClient>,
    /// Scratch mappings the dump's visits left in the tree (crate::task): unmapped when the
    /// tree is released to live on, left to die with it when it is killed.
    pub leftovers: Vec<tsdump_core::parasite::inject::Leftover>,
    /// --snapshot: the copies left for after the release (crate::snapshot); their holders are
    /// killed when dropped, with this state at the latest.
    pub snapshots: Vec<tsdump_core::mem::snapshot::Pending>,
}

type Job = Box<dyn FnOnce(&mut TracerState) + Send>;

/// A reading of the page drain's progress (`Session.progress`).
#[napi(object)]
pub struct DrainProgress {
    /// The task being (or last) drained; 0 before the first drain.
    pub pid: i32,
    /// Pages of that task's drain written so far, and how many it writes in all (its page scan's).
    pub pages_done: f64,
    pub pages_total: f64,
    /// Pages drained by this session so far, over every task.
    pub pages_all: f64,
}

pub(crate) fn drain_progress(s: tsdump_core::progress::Snapshot) -> DrainProgress {
    let ps = tsdump_core::mem::vma::page_size();
    DrainProgress { pid: s.pid, pages_done: (s.done / ps) as f64, pages_total: (s.total / ps) as f64, pages_all: (s.all / ps) as f64 }
}

#[napi]
pub struct Session {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
    /// Raised by `interrupt`; long work on the tracer thread checks it (tsdump_core::cancel).
    interrupted: Arc<AtomicBool>,
    /// How far the tracer thread's page drain has got (tsdump_core::progress), read by `progress`.
    progress: Arc<tsdump_core::progress::Progress>,
    /// Where pages images go (crate::images_dir).
    pub(crate) images_dir: Mutex<Option<Arc<tsdump_core::images_dir::ImagesDir>>>,
}

#[napi]
impl Session {
    #[napi(constructor)]
    pub fn new() -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        let progress = Arc::new(tsdump_core::progress::Progress::default());
        let counter = progress.clone();
        let thread = thread::Builder::new()
            .name("tsdump-tracer".into())
            .spawn(move || {
                tsdump_core::cancel::install(flag);
                tsdump_core::progress::install(counter);
                let mut state = TracerState::default();
                for job in rx {
                    job(&mut state);
                }
            })
            .map_err(|e| Error::from_reason(format!("KERNEL: cannot start the tracer thread: {e}")))?;
        Ok(Session { jobs: Some(tx), thread: Some(thread), interrupted, progress, images_dir: Mutex::new(None) })
    }

    /// Asks the work running on the tracer thread to stop at its next safe point (a page drain
    /// stops between two pipe loads) with a CANCELLED error; it cures and unwinds as on any error.
    /// Every later call that checks fails the same way: a session is not reused after this.
    #[napi]
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
    }

    /// How far the page drain has got, read without waiting for the tracer thread: a display
    /// polls it while a visit (startVisit) or a dumpMemory call runs. Counts only; no page leaves the core.
    #[napi]
    pub fn progress(&self) -> DrainProgress {
        drain_progress(self.progress.snapshot())
    }

    /// Stops the tracer thread once queued work is done. Tasks still traced are detached by the
    /// kernel when the thread exits, so callers release or kill them before closing.
    #[napi]
    pub fn close(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Session {
    /// Runs `f` on the tracer thread and resolves with its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut TracerState) -> tsdump_core::Result<T> + Send + 'static,
    {
        outcome(self.submit(f)?).await
    }

    /// Queues `f` on the tracer thread without waiting: its result comes through `outcome`.
    pub fn submit<T, F>(&self, f: F) -> Result<oneshot::Receiver<tsdump_core::Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&mut TracerState) -> tsdump_core::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::from_reason("CANCELLED: the session is closed"))?;
        jobs.send(Box::new(move |state| {
            let _ = tx.send(f(state));
        }))
        .map_err(|_| Error::from_reason("CANCELLED: the tracer thread is gone"))?;
        Ok(rx)
    }
}

/// The result of work `Session::submit` queued.
pub async fn outcome<T>(rx: oneshot::Receiver<tsdump_core::Result<T>>) -> Result<T> {
    match rx.await {
        Ok(result) => result.map_err(to_napi),
        Err(_) => Err(Error::from_reason("CANCELLED: the tracer thread dropped a request")),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// Example/liveness call: the tracer thread's kernel thread id.
#[napi]
impl Session {
    #[napi]
    pub async fn tracer_tid(&self) -> Result<i32> {
        self.run(|_| Ok(nix::unistd::gettid().as_raw())).await
    }
}
