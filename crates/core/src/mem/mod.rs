//! mem (to be written).
