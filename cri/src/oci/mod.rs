//! The built-in OCI runtime library: turns a bundle (config.json + rootfs) into
//! an isolated running process, in process, with runc's lifecycle semantics.
//!
//! Entry points that fork (`container::create`, `container::exec`) must be
//! called from a single-threaded process.

pub mod capabilities;
pub mod cgroups;
pub mod console;
pub mod container;
pub mod error;
pub mod hooks;
pub mod keyring;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod timens;

pub use error::{OciError, Result};
