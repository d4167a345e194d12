//! (in progress)
pub mod fs;
pub mod socket;
