//! Native Rust types for the schema's messages, with conversions both ways.
//!
//! The proto types ([`crate::proto`]) are what goes on the wire; these are
//! what the rest of the code works with: plain structs and enums with serde,
//! no prost attributes, a real enum for the task type. Conversions from proto
//! are lossless (a proto record survives proto → native → proto unchanged);
//! the only fallible one is the task type, whose wire form is an open `i32`.

pub mod process;
pub mod task;

pub use process::ProcessRecord;
pub use task::{HashCheck, HashResult, ProcessFilter, Task, TaskType, UnknownTaskType};
