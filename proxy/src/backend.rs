//! What every proxy mode implements, so the sync loop is mode-agnostic.

use crate::model::Snapshot;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether everything was rewritten (rather than only what changed).
    pub full: bool,
    /// Rules (or elements) the backend now has programmed.
    pub rules: usize,
}

/// Reports of several IP families add up to the backend's report.
impl std::ops::AddAssign for SyncReport {
    fn add_assign(&mut self, family: SyncReport) {
        self.full |= family.full;
        self.rules += family.rules;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{mode} sync: {message}")]
pub struct SyncError {
    pub mode: &'static str,
    pub message: String,
}

pub trait Backend: Send {
    fn name(&self) -> &'static str;
    /// Programs `snapshot`; `full` asks for a complete rewrite (timer, tampering, restart).
    fn sync(&mut self, snapshot: &Snapshot, full: bool) -> Result<SyncReport, SyncError>;
    /// Whether something outside the proxy changed or flushed its rules since the last sync.
    fn tampered(&mut self) -> bool;
    /// The node's own addresses changed (NodePort addresses in `primary` mode).
    fn set_node_ips(&mut self, ips: Vec<IpAddr>);
    /// Removes everything the backend programmed.
    fn cleanup(&mut self) -> Result<(), SyncError>;
}
