//! CNI error results: the spec's well-known codes, printed as JSON on stdout.

use serde::{Deserialize, Serialize};

/// Error codes reserved by the CNI specification (SPEC.md, "Error").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decoding = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    LimitedConnectivity = 51,
    /// Codes from 100 up are plugin-specific; we use 100 for internal failures
    /// (netlink, netfilter) that none of the reserved codes describes.
    Internal = 100,
}

/// A failure reported to the runtime as a CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Deserialize)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
    /// The OS error behind the failure, for callers that tolerate some
    /// (EEXIST when a parallel ADD won a race); never sent to the runtime.
    #[serde(skip)]
    pub errno: Option<i32>,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
            errno: None,
        }
    }

    pub fn with_details(mut self, details: impl std::fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, msg)
    }

    pub fn decoding(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Decoding, msg)
    }

    pub fn io(msg: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Io, msg).with_details(err)
    }

    pub fn internal(msg: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, msg).with_details(err)
    }

    /// The JSON error object of the spec, in the caller's cniVersion.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_string(&Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", self.code))
    }
}

pub type CniResult<T> = std::result::Result<T, CniError>;
