pub mod regs;
pub mod syscall;
