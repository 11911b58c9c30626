//! CheckpointContainer. Checkpointing needs CRIU; like containerd without a
//! usable criu binary, the request is validated and then refused, naming
//! the missing tool.

use berth_proto::runtime::v1 as cri;
use tonic::Status;

use super::daemon::Daemon;
use super::sandbox::store_status;
use super::status::required;
use crate::store::ContainerPhase;

/// Whether `criu` is an executable file on PATH.
fn criu_installed() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join("criu"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

impl Daemon {
    pub async fn checkpoint_container(
        &self,
        request: cri::CheckpointContainerRequest,
    ) -> Result<(), Status> {
        required(&request.container_id, "container_id")?;
        required(&request.location, "location")?;
        if request.timeout < 0 {
            return Err(Status::invalid_argument(format!(
                "timeout: {} is negative",
                request.timeout
            )));
        }
        let record = self
            .containers
            .get(&request.container_id)
            .map_err(store_status)?;
        let record = self.refresh(record).await;
        if record.phase != ContainerPhase::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running: only a running container can be checkpointed",
                record.id
            )));
        }
        if !criu_installed() {
            return Err(Status::failed_precondition(format!(
                "checkpointing container {}: CRIU is not installed (no criu binary in PATH), \
                 and checkpointing needs it",
                record.id
            )));
        }
        Err(Status::unimplemented(format!(
            "checkpointing container {}: berth-cri does not drive CRIU yet",
            record.id
        )))
    }
}
