//! The metav1 `Status` kubelet writes on the error channel when a command ends.

use serde::{Deserialize, Serialize};

pub const STATUS_SUCCESS: &str = "Success";
pub const STATUS_FAILURE: &str = "Failure";
/// `reason` of a command that exited non-zero.
pub const REASON_NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";
/// `reason` of the cause carrying the exit code.
pub const CAUSE_EXIT_CODE: &str = "ExitCode";
pub const REASON_INTERNAL_ERROR: &str = "InternalError";

/// metav1.Status as encoded by the v4+ protocols.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// metav1.StatusCause.Type, serialised as `reason`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Status {
    pub fn success() -> Self {
        Self {
            metadata: Default::default(),
            status: STATUS_SUCCESS.into(),
            message: String::new(),
            reason: String::new(),
            details: None,
            code: None,
        }
    }

    /// The status of a command that ran and exited with `code` (0 is success).
    pub fn exited(code: i32, cmd: &[String]) -> Self {
        if code == 0 {
            return Self::success();
        }
        Self {
            status: STATUS_FAILURE.into(),
            message: format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                cmd.join(" ")
            ),
            reason: REASON_NON_ZERO_EXIT_CODE.into(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: CAUSE_EXIT_CODE.into(),
                    message: code.to_string(),
                }],
            }),
            ..Self::success()
        }
    }

    /// apierrors.NewInternalError: the command could not be run at all.
    pub fn internal_error(error: &str) -> Self {
        Self {
            status: STATUS_FAILURE.into(),
            message: format!("Internal error occurred: {error}"),
            reason: REASON_INTERNAL_ERROR.into(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: String::new(),
                    message: error.to_owned(),
                }],
            }),
            code: Some(500),
            ..Self::success()
        }
    }

    /// The exit code this status reports: 0 for success, the ExitCode cause otherwise.
    pub fn exit_code(&self) -> Option<i32> {
        if self.status == STATUS_SUCCESS {
            return Some(0);
        }
        if self.reason != REASON_NON_ZERO_EXIT_CODE {
            return None;
        }
        self.details
            .as_ref()?
            .causes
            .iter()
            .find(|c| c.reason == CAUSE_EXIT_CODE)?
            .message
            .parse()
            .ok()
    }

    /// What goes on the error channel: the JSON Status for v4 and later; before v4
    /// only a failure's message, and nothing on success.
    pub fn encode(&self, json: bool) -> Vec<u8> {
        if json {
            // Serialising plain strings and maps cannot fail.
            return serde_json::to_vec(self).unwrap_or_default();
        }
        if self.status == STATUS_SUCCESS {
            return Vec::new();
        }
        self.message.clone().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_json_matches_kubelet() {
        assert_eq!(
            String::from_utf8(Status::exited(0, &[]).encode(true)).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let failed = Status::exited(3, &["sh".to_owned()]);
        let json: serde_json::Value = serde_json::from_slice(&failed.encode(true)).unwrap();
        assert_eq!(json["status"], "Failure");
        assert_eq!(json["reason"], "NonZeroExitCode");
        assert_eq!(json["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(json["details"]["causes"][0]["message"], "3");
        assert_eq!(failed.exit_code(), Some(3));
    }

    #[test]
    fn pre_v4_channels_carry_only_failure_messages() {
        assert!(Status::success().encode(false).is_empty());
        assert_eq!(
            Status::internal_error("boom").encode(false),
            b"Internal error occurred: boom"
        );
    }
}
