//! (in progress)
pub mod socket;
