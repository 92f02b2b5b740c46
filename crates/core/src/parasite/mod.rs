//! parasite (to be written).
