//! Errors of seccomp compilation; each names the spec field it is about.

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// libseccomp refused a rule or could not export the program.
    #[error("{field}: libseccomp: {source}")]
    Libseccomp {
        field: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("exporting the seccomp BPF program: {0}")]
    Export(#[source] std::io::Error),
    #[error("seccomp listener {path}: {source}")]
    Listener {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl SeccompError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SeccompError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
