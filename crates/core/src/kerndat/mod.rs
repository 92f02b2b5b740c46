//! kerndat (to be written).
