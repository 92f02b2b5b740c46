//! Syscall injection conventions (owned by the parasite work).
