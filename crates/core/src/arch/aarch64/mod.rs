pub mod regs;
pub mod syscall;

/// Highest user address + 1 with 48-bit virtual addresses (CRIU's TASK_SIZE_MAX here too).
pub const TASK_SIZE: u64 = 1 << 48;
