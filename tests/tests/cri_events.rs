//! GetContainerEvents, the stream kubelet's evented PLEG follows: container
//! and sandbox lifecycle events in order, with the pod's status, also for a
//! container that exits on its own. containerd 1.6 does not serve the RPC
//! (it came with 1.7): against it these tests are skipped.

use berth_proto::runtime::v1::{
    ContainerEventResponse, ContainerEventType, ContainerState, PodSandboxState,
    RemoveContainerRequest, StopContainerRequest,
};
use berth_tests::cri::events::{events_of, kinds, status_in};
use berth_tests::cri::{self, CriEnv};
use tonic::Streaming;

/// A container's or sandbox's whole life, as the stream announces it.
const LIFECYCLE: [ContainerEventType; 4] = [
    ContainerEventType::ContainerCreatedEvent,
    ContainerEventType::ContainerStartedEvent,
    ContainerEventType::ContainerStoppedEvent,
    ContainerEventType::ContainerDeletedEvent,
];

/// Subscribes; None (test skipped) where the runtime does not serve events.
async fn subscribe(env: &mut CriEnv) -> anyhow::Result<Option<Streaming<ContainerEventResponse>>> {
    let stream = cri::events::subscribe(env).await?;
    if stream.is_none() {
        eprintln!("SKIP: {} has no GetContainerEvents", env.kind().name());
    }
    Ok(stream)
}

#[test]
fn container_lifecycle_events_arrive_in_order_with_statuses() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let Some(mut stream) = subscribe(&mut env).await? else {
            return Ok(());
        };
        let config = env.container_config("watched", &["sleep", "3600"]);
        let (pod, _, id) = env.pod_with_container("events", config).await?;
        env.runtime
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await?;
        env.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await?;
        let events = events_of(&mut stream, &id, ContainerEventType::ContainerDeletedEvent).await?;
        assert_eq!(kinds(&events), LIFECYCLE);
        for event in &events {
            let pod_status = event.pod_sandbox_status.as_ref().expect("pod status");
            assert_eq!(pod_status.id, pod);
            assert!(event.created_at > 0);
        }
        let started = status_in(&events[1], &id).expect("the container's status");
        assert_eq!(started.state, ContainerState::ContainerRunning as i32);
        let stopped = status_in(&events[2], &id).expect("the container's status");
        assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
        assert!(
            status_in(&events[3], &id).is_none(),
            "a deleted container has no status"
        );
        Ok(())
    })
}

#[test]
fn a_container_exiting_on_its_own_emits_stopped() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let Some(mut stream) = subscribe(&mut env).await? else {
            return Ok(());
        };
        // Exits once told to; nothing asks for its status meanwhile.
        let config = env.container_config(
            "leaver",
            &[
                "sh",
                "-c",
                "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 3",
            ],
        );
        let (_, _, id) = env.pod_with_container("selfexit", config).await?;
        env.exec_ok(&id, &["touch", "/tmp/go"]).await?;
        let events = events_of(&mut stream, &id, ContainerEventType::ContainerStoppedEvent).await?;
        assert_eq!(kinds(&events), LIFECYCLE[..3]);
        let status = status_in(&events[2], &id).expect("the container's status");
        assert_eq!(status.state, ContainerState::ContainerExited as i32);
        assert_eq!(status.exit_code, 3);
        Ok(())
    })
}

#[test]
fn sandbox_lifecycle_events_use_the_sandbox_id() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let Some(mut stream) = subscribe(&mut env).await? else {
            return Ok(());
        };
        let config = env.pod_config("sandbox-events");
        let pod = env.run_pod(&config).await?;
        env.stop_and_remove_pod(&pod).await?;
        let events =
            events_of(&mut stream, &pod, ContainerEventType::ContainerDeletedEvent).await?;
        assert_eq!(kinds(&events), LIFECYCLE);
        let ready = events[1].pod_sandbox_status.as_ref().expect("pod status");
        assert_eq!(ready.id, pod);
        assert_eq!(ready.state, PodSandboxState::SandboxReady as i32);
        Ok(())
    })
}

#[test]
fn a_sandbox_whose_pause_dies_emits_stopped() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let Some(mut stream) = subscribe(&mut env).await? else {
            return Ok(());
        };
        let config = env.pod_config("pause-dies");
        let pod = env.run_pod(&config).await?;
        let pid = env.pause_pid(&pod).await?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let events =
            events_of(&mut stream, &pod, ContainerEventType::ContainerStoppedEvent).await?;
        assert_eq!(kinds(&events), LIFECYCLE[..3]);
        let status = events[2].pod_sandbox_status.as_ref().expect("pod status");
        assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
        Ok(())
    })
}
