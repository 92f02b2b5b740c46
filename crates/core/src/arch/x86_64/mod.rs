pub mod regs;
pub mod syscall;

/// Highest user address + 1 (TASK_SIZE with 4-level paging, as CRIU's); anything above (the
/// legacy [vsyscall]) is not the task's.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
