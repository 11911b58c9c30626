//! Container lifecycle: create, start, status, list, stop, remove; exit codes
//! and reasons.

use berth_proto::runtime::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ListContainersRequest,
    RemoveContainerRequest, StopContainerRequest,
};
use berth_tests::cri::{self, CriEnv};

/// A container that exits 0 on SIGTERM, as a well-behaved service does;
/// /tmp/ready tells that its trap is set.
const GRACEFUL: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; touch /tmp/ready; sleep 3600 & wait",
];

async fn list(env: &mut CriEnv, filter: ContainerFilter) -> anyhow::Result<Vec<String>> {
    Ok(env
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await?
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect())
}

async fn stop(env: &mut CriEnv, id: &str, timeout: i64) -> anyhow::Result<()> {
    env.runtime
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        })
        .await?;
    Ok(())
}

#[test]
fn container_goes_created_running_exited_removed() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let busybox = env.images.busybox.clone();
        let image_ref = env.pull(&busybox).await?;
        let pod_config = env.pod_config("lifecycle");
        let pod = env.run_pod(&pod_config).await?;
        let config = env.container_config("app", GRACEFUL);
        let id = env
            .create_container(&pod, &pod_config, config.clone())
            .await?;

        let created = env.container_status(&id).await?;
        assert_eq!(created.state, ContainerState::ContainerCreated as i32);
        assert_eq!(created.metadata, config.metadata);
        assert!(
            created.created_at > 0 && created.started_at == 0,
            "{created:?}"
        );
        assert_eq!(
            created.image.as_ref().map(|i| i.image.as_str()),
            Some(busybox.as_str())
        );
        // containerd reports the image's repo digest here (the kubelet shows
        // it as the container's imageID); PullImage returned the image id.
        let image = env
            .image
            .image_status(berth_proto::runtime::v1::ImageStatusRequest {
                image: created.image.clone(),
                verbose: false,
            })
            .await?
            .into_inner()
            .image
            .expect("image status");
        assert_eq!(image.id, image_ref);
        assert!(
            image.repo_digests.contains(&created.image_ref),
            "{created:?} {image:?}"
        );
        assert!(created.log_path.ends_with("app_0.log"), "{created:?}");
        assert_eq!(created.labels, config.labels);

        env.start_container(&id).await?;
        let running = env.container_status(&id).await?;
        assert_eq!(running.state, ContainerState::ContainerRunning as i32);
        assert!(running.started_at >= running.created_at, "{running:?}");

        env.exec_until_ok(&id, &["test", "-e", "/tmp/ready"])
            .await?;
        stop(&mut env, &id, 30).await?;
        let exited = env.container_status(&id).await?;
        assert_eq!(exited.state, ContainerState::ContainerExited as i32);
        assert_eq!(exited.exit_code, 0, "{exited:?}");
        assert_eq!(exited.reason, "Completed", "{exited:?}");
        assert!(exited.finished_at >= exited.started_at, "{exited:?}");

        env.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await?;
        let err = env.container_status(&id).await.unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().expect("gRPC status");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        Ok(())
    })
}

#[test]
fn exit_code_and_reason_of_a_failing_container() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("fails", &["sh", "-c", "exit 3"]);
        let (_, _, id) = env.pod_with_container("exit-code", config).await?;
        let exited = env
            .wait_container_state(&id, ContainerState::ContainerExited)
            .await?;
        assert_eq!(exited.exit_code, 3, "{exited:?}");
        assert_eq!(exited.reason, "Error", "{exited:?}");
        Ok(())
    })
}

#[test]
fn completed_container_reports_exit_code_zero() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("done", &["true"]);
        let (_, _, id) = env.pod_with_container("completed", config).await?;
        let exited = env
            .wait_container_state(&id, ContainerState::ContainerExited)
            .await?;
        assert_eq!((exited.exit_code, exited.reason.as_str()), (0, "Completed"));
        Ok(())
    })
}

#[test]
fn stop_kills_a_container_ignoring_sigterm_after_the_timeout() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config(
            "stubborn",
            &[
                "sh",
                "-c",
                "trap '' TERM; touch /tmp/ready; while true; do usleep 100000; done",
            ],
        );
        let (_, _, id) = env.pod_with_container("stubborn", config).await?;
        // SIGTERM must come after the trap is set.
        env.exec_until_ok(&id, &["test", "-e", "/tmp/ready"])
            .await?;
        stop(&mut env, &id, 1).await?;
        let exited = env.container_status(&id).await?;
        assert_eq!(exited.state, ContainerState::ContainerExited as i32);
        assert_eq!(exited.exit_code, 137, "SIGKILL: {exited:?}");
        assert_eq!(exited.reason, "Error", "{exited:?}");
        // Stopping an exited container is a no-op.
        stop(&mut env, &id, 1).await?;
        Ok(())
    })
}

#[test]
fn remove_forcibly_removes_a_running_container_and_is_idempotent() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("running", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("force-remove", config).await?;
        for _ in 0..2 {
            env.runtime
                .remove_container(RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await?;
        }
        assert!(list(&mut env, ContainerFilter::default()).await?.is_empty());
        Ok(())
    })
}

#[test]
fn list_filters_by_id_pod_state_and_labels() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("first", &["sleep", "3600"]);
        let (pod, pod_config, first) = env.pod_with_container("list", config).await?;
        let second_config = env.container_config("second", &["sleep", "3600"]);
        let second = env
            .create_container(&pod, &pod_config, second_config)
            .await?;
        let other_config = env.container_config("other", &["sleep", "3600"]);
        let (other_pod, _, other) = env.pod_with_container("other", other_config).await?;

        let mut all = list(&mut env, ContainerFilter::default()).await?;
        all.sort();
        let mut expected = vec![first.clone(), second.clone(), other.clone()];
        expected.sort();
        assert_eq!(all, expected);

        let by_id = ContainerFilter {
            id: first.clone(),
            ..Default::default()
        };
        assert_eq!(list(&mut env, by_id).await?, vec![first.clone()]);
        let by_pod = ContainerFilter {
            pod_sandbox_id: other_pod.clone(),
            ..Default::default()
        };
        assert_eq!(list(&mut env, by_pod).await?, vec![other.clone()]);
        let created = ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerCreated as i32,
            }),
            ..Default::default()
        };
        assert_eq!(list(&mut env, created).await?, vec![second.clone()]);
        let by_label = ContainerFilter {
            label_selector: [("berth-test/container".to_string(), "first".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(list(&mut env, by_label).await?, vec![first.clone()]);
        Ok(())
    })
}

#[test]
fn command_args_env_and_working_dir_reach_the_process() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let mut config = env.container_config("proc", &["sh", "-c"]);
        config.args = vec![
            "echo \"$GREETING $0 $(pwd)\"; sleep 3600".into(),
            "arg0".into(),
        ];
        config.envs = vec![berth_proto::runtime::v1::KeyValue {
            key: "GREETING".into(),
            value: "hello".into(),
        }];
        config.working_dir = "/tmp".into();
        let (_, _, id) = env.pod_with_container("process", config).await?;
        let environ = env
            .exec_ok(&id, &["sh", "-c", "echo $GREETING; echo $PATH; pwd"])
            .await?;
        let lines: Vec<&str> = environ.lines().collect();
        assert_eq!(lines[0], "hello");
        assert!(lines[1].contains("/bin"), "PATH from the image: {lines:?}");
        assert_eq!(lines[2], "/tmp");
        Ok(())
    })
}
