//! DaemonEye IPC: procmond (the privileged collector) streams protobuf-encoded
//! process data to daemoneye-agent (the detection orchestrator) through a
//! shared-memory ring. See `ARCHITECTURE.md` for the layers.

pub mod client;
pub mod codec;
pub mod collector;
pub mod control;
pub mod deadline;
pub mod models;
pub mod proto;
pub mod ring;
pub mod server;
pub mod session;
pub mod sys;
pub mod text;
