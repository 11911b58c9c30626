//! The CRI requests a streaming URL is issued for (fields as in runtime.v1).

use super::StreamingError;

/// CRI `ExecRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// CRI `AttachRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttachRequest {
    pub container_id: String,
    pub stdin: bool,
    pub tty: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// CRI `PortForwardRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    pub port: Vec<i32>,
}

fn invalid(field: &'static str, message: &str) -> StreamingError {
    StreamingError::InvalidArgument {
        field,
        message: message.to_owned(),
    }
}

fn validate_streams(
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<(), StreamingError> {
    if tty && stderr {
        return Err(invalid("stderr", "tty and stderr cannot both be true"));
    }
    if !stdin && !stdout && !stderr {
        return Err(invalid(
            "stdin",
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

impl ExecRequest {
    pub(crate) fn validate(&self) -> Result<(), StreamingError> {
        if self.container_id.is_empty() {
            return Err(invalid("container_id", "missing required container_id"));
        }
        if self.cmd.is_empty() {
            return Err(invalid("cmd", "missing required cmd"));
        }
        validate_streams(self.stdin, self.stdout, self.stderr, self.tty)
    }
}

impl AttachRequest {
    pub(crate) fn validate(&self) -> Result<(), StreamingError> {
        if self.container_id.is_empty() {
            return Err(invalid("container_id", "missing required container_id"));
        }
        validate_streams(self.stdin, self.stdout, self.stderr, self.tty)
    }
}

impl PortForwardRequest {
    pub(crate) fn validate(&self) -> Result<(), StreamingError> {
        if self.pod_sandbox_id.is_empty() {
            return Err(invalid("pod_sandbox_id", "missing required pod_sandbox_id"));
        }
        if let Some(port) = self.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(StreamingError::InvalidArgument {
                field: "port",
                message: format!("port {port} is outside 1-65535"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_requests_are_checked_like_upstream() {
        let ok = ExecRequest {
            container_id: "c".into(),
            cmd: vec!["sh".into()],
            stdout: true,
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let field = |r: ExecRequest| match r.validate() {
            Err(StreamingError::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(ExecRequest {
                cmd: vec![],
                ..ok.clone()
            }),
            "cmd"
        );
        assert_eq!(
            field(ExecRequest {
                container_id: String::new(),
                ..ok.clone()
            }),
            "container_id"
        );
        assert_eq!(
            field(ExecRequest {
                tty: true,
                stderr: true,
                ..ok.clone()
            }),
            "stderr"
        );
        assert_eq!(
            field(ExecRequest {
                stdout: false,
                ..ok
            }),
            "stdin"
        );
    }

    #[test]
    fn port_forward_ports_must_be_valid() {
        let request = PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![80, 70000],
        };
        assert!(matches!(
            request.validate(),
            Err(StreamingError::InvalidArgument { field: "port", .. })
        ));
    }
}
