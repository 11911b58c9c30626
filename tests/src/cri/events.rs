//! GetContainerEvents as the kubelet's evented PLEG follows it: subscribing and
//! collecting the events about one container or sandbox.

use std::time::Duration;

use berth_proto::runtime::v1::{
    ContainerEventResponse, ContainerEventType, ContainerStatus, GetEventsRequest,
};
use futures_util::StreamExt;
use tonic::Streaming;

use super::CriEnv;

/// How long `events_of` waits for the last event it wants.
const DEADLINE: Duration = Duration::from_secs(60);

/// The event stream, or None where the runtime does not serve it
/// (containerd 1.6 answers UNIMPLEMENTED: it came with 1.7).
pub async fn subscribe(
    env: &mut CriEnv,
) -> anyhow::Result<Option<Streaming<ContainerEventResponse>>> {
    match env.runtime.get_container_events(GetEventsRequest {}).await {
        Ok(stream) => Ok(Some(stream.into_inner())),
        Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
        Err(status) => Err(status.into()),
    }
}

/// Events about `id` (a container or sandbox) until one of type `last` arrived.
pub async fn events_of(
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

/// The types of `events`, in order.
pub fn kinds(events: &[ContainerEventResponse]) -> Vec<ContainerEventType> {
    events
        .iter()
        .map(|e| ContainerEventType::try_from(e.container_event_type).expect("known type"))
        .collect()
}

/// The status of container `id` an event carries, if any.
pub fn status_in<'a>(event: &'a ContainerEventResponse, id: &str) -> Option<&'a ContainerStatus> {
    event.containers_statuses.iter().find(|s| s.id == id)
}
