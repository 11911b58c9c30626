//! GetContainerEvents: the lifecycle events kubelet's evented PLEG consumes.
//! Every container (and, as containerd does, every sandbox under its own id)
//! announces CREATED, STARTED, STOPPED and DELETED with the pod's status
//! and the statuses of the pod's containers at that moment.
//!
//! Events go through a broadcast channel: publishing never waits, and a
//! subscriber that falls behind by more than the channel holds loses the
//! oldest events (logged) instead of slowing the daemon down.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use berth_proto::runtime::v1 as cri;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;
use tonic::Status;

use super::daemon::Daemon;
use super::status::now_nanos;
use crate::store::{ContainerPhase, SandboxState};
use crate::supervisor::protocol::exit_file;

/// Events a subscriber may lag behind before it loses some.
const CAPACITY: usize = 1024;

/// How often running containers are checked for an exit nobody asked about.
const EXIT_POLL: Duration = Duration::from_millis(200);

pub use cri::ContainerEventType as EventType;

/// The daemon's event channel.
#[derive(Debug)]
pub struct EventBus {
    sender: broadcast::Sender<cri::ContainerEventResponse>,
    /// Sandboxes whose STOPPED went out (until DELETED): StopPodSandbox and
    /// the exit watcher may both see a pause die.
    stopped_sandboxes: Mutex<HashSet<String>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(CAPACITY).0,
            stopped_sandboxes: Mutex::default(),
        }
    }
}

impl EventBus {
    /// A stream of every event published from now on.
    pub fn subscribe(&self) -> BoxStream<'static, Result<cri::ContainerEventResponse, Status>> {
        let receiver = self.sender.subscribe();
        futures_util::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => return Some((Ok(event), receiver)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a container event subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }

    /// Whether sandbox `id` is stopping for the first time (and records it).
    fn first_stop(&self, id: &str) -> bool {
        self.stopped_sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string())
    }

    fn forget_sandbox(&self, id: &str) {
        self.stopped_sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn publish(&self, event: cri::ContainerEventResponse) {
        // No subscriber is no error.
        let _ = self.sender.send(event);
    }
}

impl Daemon {
    /// Publishes `kind` for `id` (a container, or a sandbox's own id) of
    /// sandbox `sandbox_id`. A status that cannot be read any more (the
    /// sandbox is gone) is left out, as containerd does.
    pub fn emit_event(&self, id: &str, sandbox_id: &str, kind: EventType) {
        let pod_sandbox_status = self
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                verbose: false,
            })
            .ok()
            .and_then(|r| r.status);
        let containers_statuses = self
            .containers
            .list()
            .iter()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(Self::to_cri_status)
            .collect();
        tracing::debug!(id, sandbox = sandbox_id, ?kind, "container event");
        if id == sandbox_id && kind == EventType::ContainerDeletedEvent {
            self.events.forget_sandbox(id);
        }
        self.events.publish(cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        });
    }

    /// Announces that sandbox `id` stopped, once.
    pub fn emit_sandbox_stopped(&self, id: &str) {
        if self.events.first_stop(id) {
            self.emit_event(id, id, EventType::ContainerStoppedEvent);
        }
    }

    /// Notices containers and sandboxes that end on their own. The pod
    /// supervisor records each container exit in `<supervisor dir>/<id>.exit`;
    /// a running container with such a file is refreshed, which records the
    /// exit and emits STOPPED. A ready sandbox whose supervisor died is
    /// reconciled (RPCs that touch a pod also check at once), and one whose
    /// pause process died gets STOPPED once. Runs until the daemon is dropped.
    pub async fn watch_exits(self: std::sync::Arc<Self>) {
        let daemon = std::sync::Arc::downgrade(&self);
        drop(self);
        let mut tick = tokio::time::interval(EXIT_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(daemon) = daemon.upgrade() else {
                return;
            };
            for record in daemon.containers.list() {
                if record.phase == ContainerPhase::Running
                    && exit_file(&daemon.supervisor_dir(&record.sandbox_id), &record.id).exists()
                {
                    daemon.refresh(record).await;
                }
            }
            for record in daemon.sandboxes.list() {
                if record.state != SandboxState::Ready {
                    continue;
                }
                daemon.reconcile_lost_supervisor(&record.id).await;
                if Self::observed_state(&record) != cri::PodSandboxState::SandboxReady {
                    daemon.emit_sandbox_stopped(&record.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> cri::ContainerEventResponse {
        cri::ContainerEventResponse {
            container_id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order() {
        let bus = EventBus::default();
        let mut stream = bus.subscribe();
        bus.publish(event("a"));
        bus.publish(event("b"));
        assert_eq!(stream.next().await.unwrap().unwrap().container_id, "a");
        assert_eq!(stream.next().await.unwrap().unwrap().container_id, "b");
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_old_events_without_blocking_publishers() {
        let bus = EventBus::default();
        let mut stream = bus.subscribe();
        for i in 0..CAPACITY + 10 {
            bus.publish(event(&i.to_string()));
        }
        // The 10 oldest were dropped; the rest arrive in order.
        assert_eq!(stream.next().await.unwrap().unwrap().container_id, "10");
    }

    #[test]
    fn a_sandbox_stops_once_until_it_is_deleted() {
        let bus = EventBus::default();
        assert!(bus.first_stop("s"));
        assert!(!bus.first_stop("s"));
        bus.forget_sandbox("s");
        assert!(bus.first_stop("s"));
    }

    #[test]
    fn publishing_without_subscribers_is_fine() {
        EventBus::default().publish(event("a"));
    }
}
