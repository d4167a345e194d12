//! DaemonEye IPC: procmond (the privileged collector) streams protobuf-encoded
//! process data to daemoneye-agent (the detection orchestrator) through a
//! shared-memory ring. See `ARCHITECTURE.md` for the layers.
//!
//! # Quick start
//!
//! Serve (procmond's part, here in this process), connect, enumerate with
//! borrowed views (no allocation per record), poll changes only, and
//! monitor:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use daemoneye_lib::client::{Agent, ChangeThresholds, ClientError, LiveTable, MonitorEvent};
//! use daemoneye_lib::server::{Server, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("de-doc-{}", std::process::id()));
//! let server = Server::bind(ServerConfig::new(dir.join("procmond.sock")))?;
//! let shutdown = server.shutdown_handle();
//! let socket = server.socket_path().to_owned();
//! let serving = std::thread::spawn(move || server.run_until(&server.shutdown_handle()));
//!
//! let mut agent = Agent::connect(&socket)?;
//! // Views borrow the agent's copy of each frame.
//! let mut names = 0;
//! agent.enumerate(None, false)?.for_each_view(|view| {
//!     names += usize::from(!view.name().is_empty());
//!     Ok::<(), ClientError>(())
//! })?;
//! assert!(names > 0);
//!
//! // Changes only: the first poll is whole, the next ones say what changed.
//! let mut table = LiveTable::new();
//! table.apply(agent.enumerate_changes(None, ChangeThresholds::default())?);
//! assert!(table.get(std::process::id()).is_some());
//!
//! // A monitor of this process's tree: its snapshot first.
//! let mut stream = agent.monitor(&[std::process::id()], Duration::from_millis(10))?;
//! let deadline = Instant::now() + Duration::from_secs(5);
//! assert!(matches!(stream.next_event(deadline)?, Some(MonitorEvent::Snapshot(_))));
//! stream.cancel()?;
//!
//! drop(agent);
//! shutdown.trigger();
//! serving.join().expect("the server thread");
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! ```
//!
//! The public API is [`client`] (the agent's library), [`proto`] and
//! [`models`] (the seed's schema and native types), [`ring`] (the
//! shared-memory transport on its own) and [`server`] (procmond's serving
//! loop); [`session`] and [`control`] are the stream and control protocols
//! they share. [`collector`], [`sys`], [`codec`], [`deadline`] and [`text`]
//! are the parts procmond and the binaries are built from.

pub mod cli;
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
