//! The daemon's [`StreamingBackend`]: finds the container or sandbox a session is
//! for and runs it.

use std::sync::{Arc, Weak};

use crate::server::daemon::Daemon;
use crate::streaming::{BackendError, CommandStreams, PortForwardStream, StreamingBackend};

pub struct DaemonBackend {
    /// Weak: the daemon owns the streaming server that owns this backend.
    daemon: Weak<Daemon>,
}

impl DaemonBackend {
    pub fn new(daemon: Weak<Daemon>) -> Self {
        Self { daemon }
    }

    fn daemon(&self) -> Result<Arc<Daemon>, BackendError> {
        self.daemon
            .upgrade()
            .ok_or_else(|| BackendError("the daemon is shutting down".into()))
    }
}

fn backend_error(status: tonic::Status) -> BackendError {
    BackendError(status.message().to_owned())
}

impl StreamingBackend for DaemonBackend {
    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        streams: CommandStreams,
    ) -> Result<i32, BackendError> {
        let daemon = self.daemon()?;
        let record = daemon
            .running_container(container_id)
            .await
            .map_err(backend_error)?;
        super::exec::run(&daemon, &record.id, cmd, streams).await
    }

    async fn attach(
        &self,
        container_id: &str,
        streams: CommandStreams,
    ) -> Result<(), BackendError> {
        let daemon = self.daemon()?;
        let record = daemon
            .running_container(container_id)
            .await
            .map_err(backend_error)?;
        super::attach::run(
            &daemon.supervisor_dir(&record.sandbox_id),
            &record.id,
            streams,
        )
        .await
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: PortForwardStream,
    ) -> Result<(), BackendError> {
        let daemon = self.daemon()?;
        let sandbox = daemon
            .ready_sandbox(pod_sandbox_id)
            .map_err(backend_error)?;
        super::port_forward::run(sandbox.netns, port, stream).await
    }
}
