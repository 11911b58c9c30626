//! The runtime operations a supervisor asks of `berth-supervisor-op`, and that
//! helper's side: it performs one operation through the OCI runtime library,
//! writes the JSON `Result` to fd 3 and exits.
//!
//! The operations run in a process of their own, not in the supervisor: the
//! supervisor lives as long as its pod, and the runtime library (spec parsing,
//! seccomp, cgroups and their dependencies) would make its binary, and so every
//! pod's resident memory, several times larger. The supervisor binary links
//! none of it: it writes [`RuntimeOp`]'s JSON itself (its `wire` module, whose
//! tests check it against this type).

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::oci::container::{self, create::CreateOptions};
use crate::oci::state::StateStore;

/// The descriptor the helper writes its result to.
pub use super::names::RESULT_FD;

/// One operation on a container of the runtime root the helper is given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RuntimeOp {
    /// Creates the container; its init inherits the helper's stdio, or gets a
    /// pty whose master it sends to `console_socket`. Answers the init's pid.
    Create {
        id: String,
        bundle: PathBuf,
        systemd_cgroup: bool,
        console_socket: Option<PathBuf>,
    },
    Start {
        id: String,
    },
    Kill {
        id: String,
        signal: i32,
    },
    /// Removes the container; one already gone from the runtime is fine.
    Delete {
        id: String,
    },
    /// Answers whether the container's cgroup recorded an OOM kill.
    OomKilled {
        id: String,
    },
}

impl RuntimeOp {
    /// The operation's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Start { .. } => "start",
            Self::Kill { .. } => "kill",
            Self::Delete { .. } => "delete",
            Self::OomKilled { .. } => "oom check",
        }
    }
}

/// `berth-supervisor-op <runtime root> <operation as JSON>`.
pub fn main(args: &[String]) -> i32 {
    let (Some(root), Some(op), None) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: berth-supervisor-op <runtime-root> <operation-json>");
        return 2;
    };
    // SAFETY: the supervisor hands the result pipe over as fd 3; nothing else
    // in this process owns it.
    let result_fd = unsafe { OwnedFd::from_raw_fd(RESULT_FD) };
    let result = match serde_json::from_str::<RuntimeOp>(op) {
        Ok(op) => perform(Path::new(root), op),
        Err(e) => Err(format!("bad operation: {e}")),
    };
    let bytes = serde_json::to_vec(&result).unwrap_or_default();
    match std::fs::File::from(result_fd).write_all(&bytes) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-supervisor-op: writing the result: {e}");
            1
        }
    }
}

fn perform(root: &Path, op: RuntimeOp) -> Result<serde_json::Value, String> {
    let runtime = StateStore::new(root);
    let value = match op {
        RuntimeOp::Create {
            id,
            bundle,
            systemd_cgroup,
            console_socket,
        } => {
            let options = CreateOptions {
                id,
                bundle,
                systemd_cgroup,
                console_socket,
                ..CreateOptions::default()
            };
            let state = container::create::create(&runtime, &options).map_err(|e| e.to_string())?;
            serde_json::json!(state.pid)
        }
        RuntimeOp::Start { id } => {
            container::start::start(&runtime, &id).map_err(|e| e.to_string())?;
            serde_json::Value::Null
        }
        RuntimeOp::Kill { id, signal } => {
            let signal = Signal::try_from(signal).map_err(|e| format!("signal {signal}: {e}"))?;
            container::kill::kill(&runtime, &id, signal, false).map_err(|e| e.to_string())?;
            serde_json::Value::Null
        }
        RuntimeOp::Delete { id } => {
            match container::delete::delete(&runtime, &id, true) {
                Ok(()) => {}
                // Already gone from the runtime is what delete wants.
                Err(_) if !runtime.dir(&id).exists() => {}
                Err(e) => return Err(e.to_string()),
            }
            serde_json::Value::Null
        }
        RuntimeOp::OomKilled { id } => serde_json::json!(oom_killed(&runtime, &id)),
    };
    Ok(value)
}

/// Whether the container's cgroup recorded an OOM kill.
fn oom_killed(runtime: &StateStore, id: &str) -> bool {
    runtime
        .load(id)
        .ok()
        .and_then(|state| state.cgroup_manager().ok())
        .and_then(|cgroup| cgroup.stats().ok())
        .is_some_and(|stats| stats.memory.oom_kill > 0)
}
