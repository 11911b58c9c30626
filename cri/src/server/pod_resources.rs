//! The sandbox's own cgroup (pause is placed in it by RunPodSandbox with
//! the pod overhead as limits): removed at StopPodSandbox, updated by
//! UpdatePodSandboxResources.

use berth_proto::runtime::v1 as cri;
use tonic::Status;

use super::daemon::Daemon;
use super::sandbox::store_status;
use super::status::required;
use crate::sandbox::cgroup::{PodCgroups, oci_resources};
use crate::store::SandboxRecord;

impl Daemon {
    fn pod_cgroups(&self, record: &SandboxRecord) -> Option<PodCgroups> {
        PodCgroups::of(&record.config, self.config.cgroup_driver, &record.id)
    }

    /// Removes the sandbox cgroup once pause is gone.
    pub(super) fn remove_sandbox_cgroup(&self, record: &SandboxRecord) -> Result<(), Status> {
        match self.pod_cgroups(record).map(|c| c.remove()) {
            Some(Err(e)) => Err(Status::internal(format!(
                "removing the cgroup of sandbox {}: {e}",
                record.id
            ))),
            _ => Ok(()),
        }
    }

    /// UpdatePodSandboxResources: the new overhead becomes the sandbox
    /// cgroup's limits (the pod cgroup itself is the kubelet's); both are
    /// recorded for later status.
    pub fn update_pod_sandbox_resources(
        &self,
        request: cri::UpdatePodSandboxResourcesRequest,
    ) -> Result<(), Status> {
        required(&request.pod_sandbox_id, "pod_sandbox_id")?;
        let record = self
            .sandboxes
            .get(&request.pod_sandbox_id)
            .map_err(store_status)?;
        let overhead = request
            .overhead
            .as_ref()
            .map(|o| oci_resources(o, "overhead"))
            .transpose()
            .map_err(Status::invalid_argument)?;
        if let Some(resources) = &request.resources {
            oci_resources(resources, "resources").map_err(Status::invalid_argument)?;
        }
        if Self::observed_state(&record) != cri::PodSandboxState::SandboxReady {
            return Err(Status::failed_precondition(format!(
                "pod_sandbox_id: sandbox {} is not ready",
                record.id
            )));
        }
        if let (Some(cgroups), Some(overhead)) = (self.pod_cgroups(&record), &overhead) {
            cgroups
                .sandbox()
                .and_then(|m| m.update(overhead))
                .map_err(|e| Status::invalid_argument(format!("overhead: {e}")))?;
        }
        self.sandboxes
            .update(&record.id, |r| {
                let linux = r.config.linux.get_or_insert_with(Default::default);
                if request.overhead.is_some() {
                    linux.overhead = request.overhead.clone();
                }
                if request.resources.is_some() {
                    linux.resources = request.resources.clone();
                }
            })
            .map_err(store_status)?;
        Ok(())
    }
}
