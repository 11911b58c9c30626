//! Daemon ⇄ supervisor messages: one JSON request line, one JSON response
//! line per connection. `version` lets either side refuse a peer it does
//! not understand after an upgrade.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Creates the container from its bundle; output goes to `log_path`.
    Create {
        id: String,
        bundle: PathBuf,
        log_path: PathBuf,
        systemd_cgroup: bool,
    },
    Start {
        id: String,
    },
    /// Signals the container's init.
    Kill {
        id: String,
        signal: i32,
    },
    /// Removes a stopped container from the runtime.
    Delete {
        id: String,
    },
    Status {
        id: String,
    },
    /// Reopens the log file (after the kubelet rotated it).
    ReopenLog {
        id: String,
    },
    /// Ends the supervisor (the pod is being removed).
    Shutdown,
}

/// How a container ended, as written to `<dir>/<id>.exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit code, or 128 + signal when killed by one.
    pub code: i32,
    /// Nanoseconds since the epoch.
    pub finished_at: i64,
    /// The kernel's OOM killer ended it (the cgroup counted an OOM kill).
    #[serde(default)]
    pub oom_killed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Empty on success.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Nanoseconds since the epoch of the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
}

impl Response {
    pub fn failed(error: impl Into<String>) -> Self {
        Response {
            error: error.into(),
            ..Response::default()
        }
    }
}

/// Nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The exit file of container `id` in a supervisor dir.
pub fn exit_file(dir: &std::path::Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.exit"))
}

/// Reads an exit file (None when the container has not exited).
pub fn read_exit(dir: &std::path::Path, id: &str) -> Option<Exit> {
    let data = std::fs::read(exit_file(dir, id)).ok()?;
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let request = Request {
            version: VERSION,
            op: Op::Kill {
                id: "c1".into(),
                signal: 15,
            },
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"version":1,"op":"kill","id":"c1","signal":15}"#);
        let back: Request = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.op, Op::Kill { signal: 15, .. }));
    }
}
