//! Registers and FPU state (owned by the capture work).
