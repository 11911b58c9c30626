//! The container store: every container's record, persisted like sandboxes.

use std::path::PathBuf;

use berth_proto::runtime::v1 as cri;
use serde::{Deserialize, Serialize};

use super::records::{Record, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    Created,
    Running,
    Exited,
    /// Its supervisor is gone and no exit was recorded.
    Unknown,
}

impl ContainerPhase {
    pub fn to_cri(self) -> cri::ContainerState {
        match self {
            ContainerPhase::Created => cri::ContainerState::ContainerCreated,
            ContainerPhase::Running => cri::ContainerState::ContainerRunning,
            ContainerPhase::Exited => cri::ContainerState::ContainerExited,
            ContainerPhase::Unknown => cri::ContainerState::ContainerUnknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`.
    pub name: String,
    pub sandbox_id: String,
    #[serde(with = "super::proto_bytes")]
    pub config: cri::ContainerConfig,
    /// The image id (config digest) and the name it was asked for by.
    pub image_id: String,
    pub image_name: String,
    /// What CRI reports as image_ref: the repo digest (else the id).
    pub image_ref: String,
    /// The image's StopSignal, if any.
    pub image_stop_signal: Option<String>,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub phase: ContainerPhase,
    pub reason: String,
    pub message: String,
    /// Full path of the log file ("" when the kubelet asked for none).
    pub log_path: PathBuf,
    pub bundle: PathBuf,
    pub pid: Option<i32>,
}

impl Record for ContainerRecord {
    const KIND: &'static str = "container";

    fn id(&self) -> &str {
        &self.id
    }

    fn name(&self) -> &str {
        &self.name
    }
}

pub type ContainerStore = Store<ContainerRecord>;
