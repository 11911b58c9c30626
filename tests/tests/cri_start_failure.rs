//! A container whose process cannot be started (its command does not exist):
//! as with containerd, CreateContainer succeeds (the runtime's create runs at
//! start), StartContainer fails, and the container is left EXITED with reason
//! StartError, exit code 128 and the runtime's error as message; the event
//! stream announces it STOPPED.

use berth_proto::runtime::v1::{ContainerEventType, ContainerState, RemoveContainerRequest};
use berth_tests::cri::{self, events};

#[test]
fn a_missing_command_fails_start_and_leaves_the_container_exited() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let stream = events::subscribe(&mut env).await?;
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        let pod_config = env.pod_config("startfail");
        let pod = env.run_pod(&pod_config).await?;
        let config = env.container_config("ghost", &["/no/such/command", "arg"]);
        let id = env.create_container(&pod, &pod_config, config).await?;
        let created = env.container_status(&id).await?;
        assert_eq!(created.state, ContainerState::ContainerCreated as i32);

        let err = env
            .start_container(&id)
            .await
            .expect_err("a missing command cannot start");
        assert!(
            format!("{err:#}").contains("/no/such/command"),
            "the error names the command: {err:#}"
        );
        let status = env.container_status(&id).await?;
        assert_eq!(status.state, ContainerState::ContainerExited as i32);
        assert_eq!(status.reason, "StartError");
        assert_eq!(status.exit_code, 128);
        assert!(
            status.message.contains("/no/such/command"),
            "message: {}",
            status.message
        );
        assert!(status.finished_at >= status.created_at);
        assert_eq!(status.started_at, 0, "it never started");

        if let Some(mut stream) = stream {
            let seen =
                events::events_of(&mut stream, &id, ContainerEventType::ContainerStoppedEvent)
                    .await?;
            assert_eq!(
                events::kinds(&seen),
                [
                    ContainerEventType::ContainerCreatedEvent,
                    ContainerEventType::ContainerStoppedEvent,
                ]
            );
            let stopped = events::status_in(&seen[1], &id).expect("the container's status");
            assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
            assert_eq!(stopped.reason, "StartError");
        }

        // It can be started no more, and removed as any exited container.
        assert!(env.start_container(&id).await.is_err());
        env.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await?;
        assert!(env.container_status(&id).await.is_err());
        Ok(())
    })
}
