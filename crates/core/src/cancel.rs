//! Cancellation of long native work (a page drain of many GiB) from another thread: the caller
//! installs a flag on the thread doing the work and raises it from anywhere; the work checks it
//! between steps that leave the task in a curable state (between two pipe loads, never inside
//! one) and unwinds with ErrorCode::Cancelled, curing and releasing on the way as for any error.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, ErrorCode, Result};

thread_local! {
    static FLAG: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Makes `flag` the cancellation flag of the calling thread.
pub fn install(flag: Arc<AtomicBool>) {
    FLAG.with(|f| *f.borrow_mut() = Some(flag));
}

/// The calling thread's flag, for work that waits in the kernel and looks at it between waits
/// (a fresh flag, never raised, on a thread without one).
pub fn flag() -> Arc<AtomicBool> {
    FLAG.with(|f| f.borrow().clone()).unwrap_or_default()
}

/// Err(Cancelled) once the calling thread's flag is raised; `what` names the interrupted work.
pub fn check(what: &str) -> Result<()> {
    let raised = FLAG.with(|f| f.borrow().as_ref().is_some_and(|f| f.load(Ordering::Relaxed)));
    if raised {
        return Err(Error::new(ErrorCode::Cancelled, format!("interrupted during {what}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_installing_thread_sees_its_flag() {
        assert!(check("nothing").is_ok(), "no flag installed: never cancelled");
        let flag = Arc::new(AtomicBool::new(false));
        install(flag.clone());
        assert!(check("work").is_ok());
        flag.store(true, Ordering::Relaxed);
        let e = check("the page drain").unwrap_err();
        assert_eq!(e.code, ErrorCode::Cancelled);
        assert!(e.message.contains("the page drain"));
        std::thread::spawn(|| assert!(check("elsewhere").is_ok())).join().unwrap();
    }
}
