//! A pod whose supervisor died (crashed, SIGKILLed) is reconciled the way
//! containerd handles a dead shim: its containers lost the process that reaps
//! them and copies their output, so the ones still running are killed and
//! every container is recorded EXITED (the exit code the supervisor wrote, or
//! 137 for the ones killed here); the sandbox becomes NOTREADY. The kubelet
//! answers a NOTREADY sandbox by stopping the pod and running a new sandbox,
//! and CreateContainer in this one fails with FAILED_PRECONDITION.

use super::container::exit_reason;
use super::daemon::Daemon;
use super::status::now_nanos;
use crate::oci::state::StateStore;
use crate::store::{ContainerPhase, SandboxState};
use crate::supervisor::client;
use crate::supervisor::protocol::read_exit;

/// What a container killed for lack of a supervisor reports.
const LOST_MESSAGE: &str = "the pod's supervisor died; the container was killed";

impl Daemon {
    /// Reconciles sandbox `sandbox_id` when its supervisor has died; returns
    /// whether it had. Idempotent: concurrent callers do the same things.
    pub async fn reconcile_lost_supervisor(&self, sandbox_id: &str) -> bool {
        let dir = self.supervisor_dir(sandbox_id);
        if !client::has_died(&dir) {
            return false;
        }
        for record in self.containers.list() {
            if record.sandbox_id != sandbox_id
                || !matches!(
                    record.phase,
                    ContainerPhase::Created | ContainerPhase::Running | ContainerPhase::Unknown
                )
            {
                continue;
            }
            let (code, finished_at, reason, message) = match read_exit(&dir, &record.id) {
                Some(exit) => (
                    exit.code,
                    exit.finished_at,
                    exit_reason(&exit),
                    String::new(),
                ),
                None => {
                    let store = StateStore::new(self.runtime_root());
                    let id = record.id.clone();
                    // Kills what is left in its cgroup and forgets the
                    // runtime state, as a forced delete does.
                    let killed = tokio::task::spawn_blocking(move || {
                        crate::oci::container::delete::delete(&store, &id, true)
                    })
                    .await;
                    if let Ok(Err(e)) = killed {
                        tracing::warn!(container = %record.id, "killing after supervisor loss: {e}");
                    }
                    (
                        128 + libc::SIGKILL,
                        now_nanos(),
                        "Error",
                        LOST_MESSAGE.to_string(),
                    )
                }
            };
            let updated = self.containers.update(&record.id, |r| {
                r.phase = ContainerPhase::Exited;
                r.exit_code = code;
                r.finished_at = finished_at;
                r.reason = reason.into();
                r.message = message.clone();
            });
            if let Err(e) = updated {
                tracing::warn!(container = %record.id, "recording exit after supervisor loss: {e}");
            }
        }
        let was_ready = self
            .sandboxes
            .get(sandbox_id)
            .is_ok_and(|r| r.state == SandboxState::Ready);
        if was_ready {
            match self
                .sandboxes
                .update(sandbox_id, |r| r.state = SandboxState::NotReady)
            {
                Ok(_) => tracing::warn!(
                    sandbox = %sandbox_id,
                    "the pod's supervisor died: containers recorded exited, sandbox not ready"
                ),
                Err(e) => tracing::warn!(sandbox = %sandbox_id, "marking sandbox not ready: {e}"),
            }
        }
        true
    }
}
