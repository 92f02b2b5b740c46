//! freezer (to be written).
