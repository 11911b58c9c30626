//! Errors of CNI configuration loading and plugin execution.

use std::path::PathBuf;
use std::time::Duration;

/// Why a CNI operation failed. Every variant names the network (and the
/// plugin, when one was involved) so the message is useful in a pod event.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable network configuration is loaded (containerd's wording).
    #[error("cni plugin not initialized")]
    NotInitialized,
    /// The plugin binary is in none of the bin dirs.
    #[error("failed to find plugin {plugin:?} in path {dirs:?}")]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    /// The plugin ran and failed (go-cni's message shape).
    #[error("plugin type={plugin:?} name={network:?} failed ({command}): {failure}")]
    Plugin {
        plugin: String,
        network: String,
        command: &'static str,
        failure: PluginFailure,
    },
    /// The plugin exited 0 but printed something that is not a result.
    #[error(
        "plugin type={plugin:?} name={network:?} ({command}) returned an invalid result: {reason}"
    )]
    InvalidResult {
        plugin: String,
        network: String,
        command: &'static str,
        reason: String,
    },
    /// The network's cniVersion does not know this command.
    #[error(
        "network {network:?}: configuration version {version} does not support the {command} command"
    )]
    UnsupportedCommand {
        network: String,
        version: String,
        command: &'static str,
    },
    /// CHECK needs the result of the ADD.
    #[error(
        "network {network:?}: no cached result for container {container_id:?} interface {ifname:?}"
    )]
    NoCachedResult {
        network: String,
        container_id: String,
        ifname: String,
    },
    /// Reading or writing the result cache failed.
    #[error("network {network:?}: result cache {path}: {reason}")]
    Cache {
        network: String,
        path: PathBuf,
        reason: String,
    },
    /// A request field (container id, interface name, annotation) is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// ADD failed and so did the DEL that was to undo it.
    #[error("{setup}; rolling back also failed: {rollback}")]
    RollbackFailed {
        setup: Box<CniError>,
        rollback: Box<CniError>,
    },
}

/// How a single plugin execution failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    /// The plugin printed a CNI error result (spec "Error" section).
    #[error("{msg}{}", details_suffix(details))]
    ErrorResult {
        code: u32,
        msg: String,
        details: String,
    },
    /// The plugin exited non-zero without a parseable error result.
    #[error("netplugin failed with {status}: {stderr:?}")]
    Exited { status: String, stderr: String },
    /// The binary could not be started.
    #[error("exec {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The plugin did not finish in time and was killed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!("; {details}")
    }
}

impl PluginFailure {
    /// The CNI error code, when the plugin reported one.
    pub fn code(&self) -> Option<u32> {
        match self {
            PluginFailure::ErrorResult { code, .. } => Some(*code),
            _ => None,
        }
    }
}
