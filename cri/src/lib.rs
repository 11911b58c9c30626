//! berth-cri CRI daemon, berth-runtime OCI runtime CLI and the runtime library.

pub mod config;
pub mod container;
pub mod image;
pub mod logs;
pub mod network;
pub mod oci;
pub mod runtime_cli;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod streaming;
pub mod supervisor;
