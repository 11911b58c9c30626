//! GetContainerEvents, the stream kubelet's evented PLEG follows: container
//! and sandbox lifecycle events in order, with the pod's status, also for a
//! container that exits on its own. containerd 1.6 does not serve the RPC
//! (it came with 1.7): against it these tests are skipped.

use std::time::Duration;

use berth_proto::runtime::v1::{
    ContainerEventResponse, ContainerEventType, ContainerState, GetEventsRequest, PodSandboxState,
    PodSandboxStatusRequest, RemoveContainerRequest, StopContainerRequest,
};
use berth_tests::cri::{self, CriEnv};
use futures_util::StreamExt;
use tonic::Streaming;

const DEADLINE: Duration = Duration::from_secs(60);

/// Subscribes; None (test skipped) where the runtime does not serve events.
async fn subscribe(env: &mut CriEnv) -> anyhow::Result<Option<Streaming<ContainerEventResponse>>> {
    match env.runtime.get_container_events(GetEventsRequest {}).await {
        Ok(stream) => Ok(Some(stream.into_inner())),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            eprintln!("SKIP: {} has no GetContainerEvents", env.kind().name());
            Ok(None)
        }
        Err(status) => Err(status.into()),
    }
}

/// Events about `id` until one of type `last` arrived.
async fn events_of(
    stream: &mut Streaming<ContainerEventResponse>,
    id: &str,
    last: ContainerEventType,
) -> anyhow::Result<Vec<ContainerEventResponse>> {
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(event) = stream.next().await {
            let event = event?;
            if event.container_id != id {
                continue;
            }
            let done = event.container_event_type == last as i32;
            seen.push(event);
            if done {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("event stream ended")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no {last:?} event for {id}: saw {seen:?}"))??;
    Ok(seen)
}

fn kinds(events: &[ContainerEventResponse]) -> Vec<ContainerEventType> {
    events
        .iter()
        .map(|e| ContainerEventType::try_from(e.container_event_type).expect("known type"))
        .collect()
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
        assert_eq!(
            kinds(&events),
            [
                ContainerEventType::ContainerCreatedEvent,
                ContainerEventType::ContainerStartedEvent,
                ContainerEventType::ContainerStoppedEvent,
                ContainerEventType::ContainerDeletedEvent,
            ]
        );
        for event in &events {
            let pod_status = event.pod_sandbox_status.as_ref().expect("pod status");
            assert_eq!(pod_status.id, pod);
            assert!(event.created_at > 0);
        }
        let started = &events[1];
        let status = started
            .containers_statuses
            .iter()
            .find(|s| s.id == id)
            .expect("the container's status");
        assert_eq!(status.state, ContainerState::ContainerRunning as i32);
        let stopped = &events[2];
        let status = stopped
            .containers_statuses
            .iter()
            .find(|s| s.id == id)
            .expect("the container's status");
        assert_eq!(status.state, ContainerState::ContainerExited as i32);
        assert!(
            events[3].containers_statuses.iter().all(|s| s.id != id),
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
        assert_eq!(
            kinds(&events),
            [
                ContainerEventType::ContainerCreatedEvent,
                ContainerEventType::ContainerStartedEvent,
                ContainerEventType::ContainerStoppedEvent,
            ]
        );
        let status = events[2]
            .containers_statuses
            .iter()
            .find(|s| s.id == id)
            .expect("the container's status");
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
        assert_eq!(
            kinds(&events),
            [
                ContainerEventType::ContainerCreatedEvent,
                ContainerEventType::ContainerStartedEvent,
                ContainerEventType::ContainerStoppedEvent,
                ContainerEventType::ContainerDeletedEvent,
            ]
        );
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
        let info = env
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            })
            .await?
            .into_inner()
            .info;
        let info: serde_json::Value = serde_json::from_str(&info["info"])?;
        let pid = info["pid"].as_i64().expect("pause pid") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let events =
            events_of(&mut stream, &pod, ContainerEventType::ContainerStoppedEvent).await?;
        assert_eq!(
            kinds(&events),
            [
                ContainerEventType::ContainerCreatedEvent,
                ContainerEventType::ContainerStartedEvent,
                ContainerEventType::ContainerStoppedEvent,
            ]
        );
        let status = events[2].pod_sandbox_status.as_ref().expect("pod status");
        assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
        Ok(())
    })
}
