//! The supervisor's side of its messages (the daemon's side, with the same
//! JSON, is `berth_cri::supervisor::protocol` and `::op`): requests from the
//! daemon, answers, exit files, and operations for the runtime helper.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::json::{ObjectWriter, Value};

pub const VERSION: i64 = crate::names::VERSION as i64;

/// ContainerConfig's `tty`, `stdin` and `stdin_once`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stdio {
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        id: String,
        bundle: String,
        log_path: String,
        systemd_cgroup: bool,
        stdio: Stdio,
    },
    Start {
        id: String,
    },
    Kill {
        id: String,
        signal: i32,
    },
    Delete {
        id: String,
    },
    Status {
        id: String,
    },
    ReopenLog {
        id: String,
    },
    Shutdown,
    Attach {
        id: String,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
}

fn field<'a>(object: &'a Value, key: &str) -> Result<&'a Value, String> {
    object
        .get(key)
        .ok_or_else(|| format!("missing field `{key}`"))
}

fn string(object: &Value, key: &str) -> Result<String, String> {
    match field(object, key)? {
        Value::String(text) => Ok(text.clone()),
        _ => Err(format!("field `{key}`: expected a string")),
    }
}

fn boolean(object: &Value, key: &str) -> Result<bool, String> {
    match field(object, key)? {
        Value::Bool(value) => Ok(*value),
        _ => Err(format!("field `{key}`: expected a boolean")),
    }
}

fn optional_boolean(object: &Value, key: &str) -> Result<bool, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(_) => boolean(object, key),
    }
}

fn integer(object: &Value, key: &str) -> Result<i64, String> {
    match field(object, key)? {
        Value::Integer(value) => Ok(*value),
        _ => Err(format!("field `{key}`: expected an integer")),
    }
}

/// A request line; the error is the answer to give.
pub fn parse_request(line: &[u8]) -> Result<Op, String> {
    let request = crate::json::parse(line).map_err(|e| format!("bad request: {e}"))?;
    let op = parse_op(&request).map_err(|e| format!("bad request: {e}"))?;
    let version = integer(&request, "version").map_err(|e| format!("bad request: {e}"))?;
    if version != VERSION {
        return Err(format!(
            "protocol version {version} not supported (supervisor speaks {VERSION})"
        ));
    }
    Ok(op)
}

fn parse_op(request: &Value) -> Result<Op, String> {
    let id = || string(request, "id");
    Ok(match string(request, "op")?.as_str() {
        "create" => Op::Create {
            id: id()?,
            bundle: string(request, "bundle")?,
            log_path: string(request, "log_path")?,
            systemd_cgroup: boolean(request, "systemd_cgroup")?,
            stdio: match request.get("stdio") {
                None | Some(Value::Null) => Stdio::default(),
                Some(stdio) => Stdio {
                    tty: optional_boolean(stdio, "tty")?,
                    stdin: optional_boolean(stdio, "stdin")?,
                    stdin_once: optional_boolean(stdio, "stdin_once")?,
                },
            },
        },
        "start" => Op::Start { id: id()? },
        "kill" => Op::Kill {
            id: id()?,
            signal: i32::try_from(integer(request, "signal")?)
                .map_err(|_| String::from("field `signal`: out of range"))?,
        },
        "delete" => Op::Delete { id: id()? },
        "status" => Op::Status { id: id()? },
        "reopen_log" => Op::ReopenLog { id: id()? },
        "shutdown" => Op::Shutdown,
        "attach" => Op::Attach {
            id: id()?,
            stdin: boolean(request, "stdin")?,
            stdout: boolean(request, "stdout")?,
            stderr: boolean(request, "stderr")?,
        },
        other => return Err(format!("unknown variant `{other}`")),
    })
}

/// How a container ended, as written to `<dir>/<id>.exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + signal when killed by one.
    pub code: i32,
    /// Nanoseconds since the epoch.
    pub finished_at: i64,
    pub oom_killed: bool,
}

impl Exit {
    pub fn to_json(self) -> Vec<u8> {
        ObjectWriter::new()
            .integer("code", i64::from(self.code))
            .integer("finished_at", self.finished_at)
            .boolean("oom_killed", self.oom_killed)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Empty on success.
    pub error: String,
    pub pid: Option<i32>,
    pub started_at: Option<i64>,
    pub exit: Option<Exit>,
}

impl Response {
    pub fn failed(error: String) -> Self {
        Response {
            error,
            ..Response::default()
        }
    }

    /// The answer line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut object = ObjectWriter::new();
        if !self.error.is_empty() {
            object = object.string("error", &self.error);
        }
        if let Some(pid) = self.pid {
            object = object.integer("pid", i64::from(pid));
        }
        if let Some(started_at) = self.started_at {
            object = object.integer("started_at", started_at);
        }
        if let Some(exit) = self.exit {
            object = object.raw("exit", &exit.to_json());
        }
        let mut line = object.finish();
        line.push(b'\n');
        line
    }
}

/// One operation for the runtime helper (`berth_cri::supervisor::op::RuntimeOp`).
pub enum RuntimeOp<'a> {
    Create {
        id: &'a str,
        bundle: &'a str,
        systemd_cgroup: bool,
        console_socket: Option<&'a str>,
    },
    Start {
        id: &'a str,
    },
    Kill {
        id: &'a str,
        signal: i32,
    },
    Delete {
        id: &'a str,
    },
    OomKilled {
        id: &'a str,
    },
}

impl RuntimeOp<'_> {
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

    pub fn to_json(&self) -> Vec<u8> {
        let object = ObjectWriter::new();
        match *self {
            Self::Create {
                id,
                bundle,
                systemd_cgroup,
                console_socket,
            } => {
                let object = object
                    .string("op", "create")
                    .string("id", id)
                    .string("bundle", bundle)
                    .boolean("systemd_cgroup", systemd_cgroup);
                match console_socket {
                    Some(socket) => object.string("console_socket", socket),
                    None => object.null("console_socket"),
                }
            }
            Self::Start { id } => object.string("op", "start").string("id", id),
            Self::Kill { id, signal } => object
                .string("op", "kill")
                .string("id", id)
                .integer("signal", i64::from(signal)),
            Self::Delete { id } => object.string("op", "delete").string("id", id),
            Self::OomKilled { id } => object.string("op", "oom_killed").string("id", id),
        }
        .finish()
    }
}

/// The helper's answer: `{"Ok": value}` or `{"Err": message}`.
pub fn parse_result(answer: &[u8]) -> Option<Result<Value, String>> {
    let value = crate::json::parse(answer).ok()?;
    if let Some(ok) = value.get("Ok") {
        return Some(Ok(ok.clone()));
    }
    match value.get("Err") {
        Some(Value::String(message)) => Some(Err(message.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! The daemon's serde types are the other end of every message here.
    use berth_cri::supervisor::op::RuntimeOp as DaemonRuntimeOp;
    use berth_cri::supervisor::protocol as daemon;

    use super::*;

    fn request_line(op: daemon::Op) -> Vec<u8> {
        serde_json::to_vec(&daemon::Request {
            version: daemon::VERSION,
            op,
        })
        .unwrap()
    }

    #[test]
    fn every_request_of_the_daemon_parses() {
        let stdio = daemon::Stdio {
            tty: true,
            stdin: true,
            stdin_once: false,
        };
        let cases = [
            (
                daemon::Op::Create {
                    id: "c1".into(),
                    bundle: "/run/b\"1".into(),
                    log_path: "/var/log/pods/p/c/0.log".into(),
                    systemd_cgroup: true,
                    stdio,
                },
                Op::Create {
                    id: "c1".into(),
                    bundle: "/run/b\"1".into(),
                    log_path: "/var/log/pods/p/c/0.log".into(),
                    systemd_cgroup: true,
                    stdio: Stdio {
                        tty: true,
                        stdin: true,
                        stdin_once: false,
                    },
                },
            ),
            (
                daemon::Op::Start { id: "c".into() },
                Op::Start { id: "c".into() },
            ),
            (
                daemon::Op::Kill {
                    id: "c".into(),
                    signal: 15,
                },
                Op::Kill {
                    id: "c".into(),
                    signal: 15,
                },
            ),
            (
                daemon::Op::Delete { id: "c".into() },
                Op::Delete { id: "c".into() },
            ),
            (
                daemon::Op::Status { id: "c".into() },
                Op::Status { id: "c".into() },
            ),
            (
                daemon::Op::ReopenLog { id: "c".into() },
                Op::ReopenLog { id: "c".into() },
            ),
            (daemon::Op::Shutdown, Op::Shutdown),
            (
                daemon::Op::Attach {
                    id: "c".into(),
                    stdin: true,
                    stdout: false,
                    stderr: true,
                },
                Op::Attach {
                    id: "c".into(),
                    stdin: true,
                    stdout: false,
                    stderr: true,
                },
            ),
        ];
        for (sent, expected) in cases {
            assert_eq!(parse_request(&request_line(sent)), Ok(expected));
        }
    }

    #[test]
    fn creates_from_older_daemons_have_plain_stdio() {
        let line = br#"{"version":1,"op":"create","id":"c","bundle":"/b","log_path":"/l","systemd_cgroup":false}"#;
        assert!(matches!(
            parse_request(line),
            Ok(Op::Create { stdio, .. }) if stdio == Stdio::default()
        ));
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let missing = parse_request(br#"{"version":1,"op":"start"}"#).unwrap_err();
        assert!(missing.contains("missing field `id`"), "{missing}");
        let version = parse_request(br#"{"version":7,"op":"shutdown"}"#).unwrap_err();
        assert!(
            version.contains("protocol version 7 not supported"),
            "{version}"
        );
        let unknown = parse_request(br#"{"version":1,"op":"reboot"}"#).unwrap_err();
        assert!(unknown.contains("reboot"), "{unknown}");
    }

    #[test]
    fn answers_and_exit_files_read_back_in_the_daemon() {
        let exit = Exit {
            code: 137,
            finished_at: 1_700_000_000_123_456_789,
            oom_killed: true,
        };
        let response = Response {
            error: String::new(),
            pid: Some(42),
            started_at: Some(5),
            exit: Some(exit),
        };
        let line = response.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let read: daemon::Response = serde_json::from_slice(&line).unwrap();
        let daemon_exit = daemon::Exit {
            code: 137,
            finished_at: 1_700_000_000_123_456_789,
            oom_killed: true,
        };
        assert_eq!(
            read,
            daemon::Response {
                error: String::new(),
                pid: Some(42),
                started_at: Some(5),
                exit: Some(daemon_exit),
            }
        );
        let failed: daemon::Response =
            serde_json::from_slice(&Response::failed("no \"such\"".into()).to_line()).unwrap();
        assert_eq!(failed, daemon::Response::failed("no \"such\""));
        let exit_file: daemon::Exit = serde_json::from_slice(&exit.to_json()).unwrap();
        assert_eq!(exit_file, daemon_exit);
    }

    #[test]
    fn runtime_operations_read_back_in_the_helper() {
        let create = RuntimeOp::Create {
            id: "c",
            bundle: "/b",
            systemd_cgroup: false,
            console_socket: Some("console-c.sock"),
        };
        let read: DaemonRuntimeOp = serde_json::from_slice(&create.to_json()).unwrap();
        assert!(matches!(
            read,
            DaemonRuntimeOp::Create { id, console_socket: Some(socket), .. }
                if id == "c" && socket.to_str() == Some("console-c.sock")
        ));
        let kill = RuntimeOp::Kill { id: "c", signal: 9 };
        let read: DaemonRuntimeOp = serde_json::from_slice(&kill.to_json()).unwrap();
        assert!(matches!(read, DaemonRuntimeOp::Kill { signal: 9, .. }));
        for op in [
            RuntimeOp::Start { id: "c" },
            RuntimeOp::Delete { id: "c" },
            RuntimeOp::OomKilled { id: "c" },
        ] {
            let read: DaemonRuntimeOp = serde_json::from_slice(&op.to_json()).unwrap();
            assert_eq!(read.name(), op.name());
        }
    }

    #[test]
    fn helper_results_parse() {
        let ok = serde_json::to_vec(&Ok::<_, String>(serde_json::json!(1234))).unwrap();
        assert_eq!(parse_result(&ok), Some(Ok(Value::Integer(1234))));
        let unit = serde_json::to_vec(&Ok::<_, String>(serde_json::Value::Null)).unwrap();
        assert_eq!(parse_result(&unit), Some(Ok(Value::Null)));
        let err = serde_json::to_vec(&Err::<serde_json::Value, _>("boom".to_string())).unwrap();
        assert_eq!(parse_result(&err), Some(Err("boom".into())));
        assert_eq!(parse_result(b""), None);
    }
}
