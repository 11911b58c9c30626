//! Exec, Attach and PortForward: the RPCs check the container or sandbox and hand
//! out a one-time URL of the streaming server (as containerd does); what runs
//! behind the URL is [`DaemonBackend`]:
//!
//! - exec: `berth-runtime exec` (pipes, or a pty whose master comes back over a
//!   console socket), its exit code on the error channel;
//! - attach: a connection to the pod supervisor, which holds the container's
//!   stdio (see the `berth-supervisor` binary);
//! - port-forward: a TCP connection to localhost made inside the pod's netns.

mod attach;
mod backend;
mod exec;
mod port_forward;
mod pty;

use std::sync::Arc;

use berth_proto::runtime::v1 as cri;
use tonic::Status;

use super::daemon::Daemon;
use super::sandbox::store_status;
use super::status::required;
use crate::store::{ContainerPhase, ContainerRecord, SandboxRecord, SandboxState};
use crate::streaming::{
    AttachRequest, ExecRequest, PortForwardRequest, StreamingConfig, StreamingError,
    StreamingServer,
};
use backend::DaemonBackend;

/// Starts the streaming server of `daemon` on the configured address.
pub async fn start(daemon: &Arc<Daemon>) -> anyhow::Result<()> {
    let config = StreamingConfig {
        address: daemon.config.stream_address,
        stream_idle_timeout: daemon.config.stream_idle_timeout,
        tls: daemon.config.stream_tls.clone(),
        ..StreamingConfig::default()
    };
    let backend = Arc::new(DaemonBackend::new(Arc::downgrade(daemon)));
    let server = StreamingServer::start(config, backend).await?;
    // Set once, right after the daemon was made: nothing else sets it.
    let _ = daemon.streaming.set(server);
    Ok(())
}

/// containerd's mapping of the streaming server's refusals.
fn streaming_status(error: StreamingError) -> Status {
    match error {
        StreamingError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
        StreamingError::TooManyInFlight(_) => Status::resource_exhausted(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

impl Daemon {
    fn stream_server(&self) -> Result<&StreamingServer, Status> {
        self.streaming
            .get()
            .ok_or_else(|| Status::unavailable("the streaming server is not running"))
    }

    /// The container, which must be running to stream to.
    async fn running_container(&self, id: &str) -> Result<ContainerRecord, Status> {
        required(id, "container_id")?;
        let record = self.containers.get(id).map_err(store_status)?;
        let record = self.refresh(record).await;
        if record.phase != ContainerPhase::Running {
            return Err(Status::failed_precondition(format!(
                "container {id} is in {:?} state, not running",
                record.phase
            )));
        }
        Ok(record)
    }

    pub async fn exec(&self, request: cri::ExecRequest) -> Result<cri::ExecResponse, Status> {
        let record = self.running_container(&request.container_id).await?;
        let url = self
            .stream_server()?
            .get_exec(ExecRequest {
                container_id: record.id,
                cmd: request.cmd,
                tty: request.tty,
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr,
            })
            .map_err(streaming_status)?;
        Ok(cri::ExecResponse { url })
    }

    pub async fn attach(&self, request: cri::AttachRequest) -> Result<cri::AttachResponse, Status> {
        let record = self.running_container(&request.container_id).await?;
        let url = self
            .stream_server()?
            .get_attach(AttachRequest {
                container_id: record.id,
                stdin: request.stdin,
                tty: request.tty,
                stdout: request.stdout,
                stderr: request.stderr,
            })
            .map_err(streaming_status)?;
        Ok(cri::AttachResponse { url })
    }

    pub fn port_forward(
        &self,
        request: cri::PortForwardRequest,
    ) -> Result<cri::PortForwardResponse, Status> {
        let sandbox = self.ready_sandbox(&request.pod_sandbox_id)?;
        let url = self
            .stream_server()?
            .get_port_forward(PortForwardRequest {
                pod_sandbox_id: sandbox.id,
                port: request.port,
            })
            .map_err(streaming_status)?;
        Ok(cri::PortForwardResponse { url })
    }

    fn ready_sandbox(&self, id: &str) -> Result<SandboxRecord, Status> {
        required(id, "pod_sandbox_id")?;
        let sandbox = self.sandboxes.get(id).map_err(store_status)?;
        if sandbox.state != SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {id} is not ready"
            )));
        }
        Ok(sandbox)
    }
}
