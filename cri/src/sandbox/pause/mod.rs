//! The pod's pause process (the `berth-pause` binary, no pause image):
//! started in the pod's new PID, IPC and UTS namespaces and joined to the
//! pod's network namespace, it holds them for the containers to join.

mod namespaces;
mod spawn;

pub use namespaces::{NamespacePaths, SandboxNamespaces};
pub use spawn::{PauseError, PauseProcess, spawn_pause};
