//! Daemon ⇄ supervisor messages: one JSON request line, one JSON response
//! line per connection. `version` lets either side refuse a peer it does
//! not understand after an upgrade. After a successful [`Op::Attach`] the
//! connection carries [`frame`]s both ways until the container's output ends.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::names::VERSION;

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
        /// How the container's stdio is wired (absent from older daemons: no tty, no stdin).
        #[serde(default)]
        stdio: Stdio,
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
    /// Connects this connection to the container's stdio (CRI Attach).
    Attach {
        id: String,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
}

/// ContainerConfig's `tty`, `stdin` and `stdin_once`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stdio {
    /// The container runs on a pty the supervisor holds the master of; its output is
    /// all stdout.
    #[serde(default)]
    pub tty: bool,
    /// The container's stdin stays open for attach (otherwise it reads /dev/null).
    #[serde(default)]
    pub stdin: bool,
    /// Stdin closes when the first attach that used it ends.
    #[serde(default)]
    pub stdin_once: bool,
}

/// The framing of an attach connection (after a successful [`Op::Attach`]).
pub mod frame {
    include!("frame.rs");
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

/// The exit file of container `id` in a supervisor dir.
pub fn exit_file(dir: &std::path::Path, id: &str) -> PathBuf {
    dir.join(format!("{id}{}", super::names::EXIT_FILE_SUFFIX))
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

    #[test]
    fn creates_from_older_daemons_have_plain_stdio() {
        let text = r#"{"version":1,"op":"create","id":"c","bundle":"/b","log_path":"/l","systemd_cgroup":false}"#;
        let request: Request = serde_json::from_str(text).unwrap();
        assert!(matches!(request.op, Op::Create { stdio, .. } if stdio == Stdio::default()));
    }

    #[test]
    fn frames_round_trip_across_partial_reads() {
        let mut wire = Vec::new();
        frame::encode(frame::STDIN, b"hello", &mut wire);
        frame::encode(frame::RESIZE, &frame::resize(80, 24), &mut wire);
        let mut buf = wire[..3].to_vec();
        assert_eq!(frame::take(&mut buf), Ok(None));
        buf.extend_from_slice(&wire[3..]);
        assert_eq!(
            frame::take(&mut buf),
            Ok(Some((frame::STDIN, b"hello".to_vec())))
        );
        let (kind, payload) = frame::take(&mut buf).unwrap().unwrap();
        assert_eq!(kind, frame::RESIZE);
        assert_eq!(frame::parse_resize(&payload), Some((80, 24)));
        assert!(buf.is_empty());
        let mut huge = vec![frame::STDIN, 0xff, 0xff, 0xff, 0xff];
        assert!(frame::take(&mut huge).is_err());
    }
}
