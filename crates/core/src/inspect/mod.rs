//! inspect (to be written).
