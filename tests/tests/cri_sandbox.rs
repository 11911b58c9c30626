//! Pod sandbox lifecycle: run, status, list with filters, stop, remove, and
//! the idempotence of stop and remove.

use berth_proto::runtime::v1::{
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PodSandboxStatusRequest, RemovePodSandboxRequest, StopPodSandboxRequest,
};
use berth_tests::cri::{self, CriEnv};

async fn pod_state(env: &mut CriEnv, id: &str) -> anyhow::Result<i32> {
    let status = env
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .expect("status");
    Ok(status.state)
}

async fn list(env: &mut CriEnv, filter: PodSandboxFilter) -> anyhow::Result<Vec<String>> {
    Ok(env
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await?
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect())
}

#[test]
fn run_pod_sandbox_reports_ready_status_with_metadata_and_pod_ip() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.pod_config("ready");
        let id = env.run_pod(&config).await?;
        let status = env
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .expect("status");
        assert_eq!(status.id, id);
        assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
        assert_eq!(status.metadata, config.metadata);
        assert_eq!(status.labels, config.labels);
        assert!(status.created_at > 0, "{status:?}");
        let ip = status.network.expect("network status").ip;
        assert!(
            ip.starts_with("10.88."),
            "pod IP {ip:?} from the bridge conflist"
        );
        Ok(())
    })
}

#[test]
fn stopped_sandbox_is_not_ready_and_removed_sandbox_is_gone() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.pod_config("stop-remove");
        let id = env.run_pod(&config).await?;
        env.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
        assert_eq!(
            pod_state(&mut env, &id).await?,
            PodSandboxState::SandboxNotready as i32
        );
        env.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
        let err = pod_state(&mut env, &id).await.unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        let all = list(&mut env, PodSandboxFilter::default()).await?;
        assert!(!all.contains(&id), "{all:?}");
        Ok(())
    })
}

#[test]
fn stop_and_remove_are_idempotent() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.pod_config("idempotent");
        let id = env.run_pod(&config).await?;
        for _ in 0..2 {
            env.runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
        }
        for _ in 0..2 {
            env.runtime
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
        }
        // Stopping a sandbox that no longer exists: containerd 1.6 answers
        // NotFound (the kubelet treats it as stopped); no other error.
        let again = env
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        if let Err(status) = again {
            assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        }
        Ok(())
    })
}

#[test]
fn list_filters_by_id_state_and_labels() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let first_config = env.pod_config("first");
        let first = env.run_pod(&first_config).await?;
        let second_config = env.pod_config("second");
        let second = env.run_pod(&second_config).await?;
        env.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: second.clone(),
            })
            .await?;

        let mut all = list(&mut env, PodSandboxFilter::default()).await?;
        all.sort();
        let mut expected = vec![first.clone(), second.clone()];
        expected.sort();
        assert_eq!(all, expected);

        let by_id = PodSandboxFilter {
            id: first.clone(),
            ..Default::default()
        };
        assert_eq!(list(&mut env, by_id).await?, vec![first.clone()]);

        // A unique prefix of the id matches too (crictl relies on it).
        let by_prefix = PodSandboxFilter {
            id: first[..12].to_string(),
            ..Default::default()
        };
        assert_eq!(list(&mut env, by_prefix).await?, vec![first.clone()]);

        let ready = PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        assert_eq!(list(&mut env, ready).await?, vec![first.clone()]);
        let not_ready = PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxNotready as i32,
            }),
            ..Default::default()
        };
        assert_eq!(list(&mut env, not_ready).await?, vec![second.clone()]);

        let by_label = PodSandboxFilter {
            label_selector: [("berth-test/pod".to_string(), "second".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(list(&mut env, by_label).await?, vec![second.clone()]);
        let no_match = PodSandboxFilter {
            label_selector: [("berth-test/pod".to_string(), "third".to_string())].into(),
            ..Default::default()
        };
        assert!(list(&mut env, no_match).await?.is_empty());
        Ok(())
    })
}

#[test]
fn pod_hostname_is_the_configured_one() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("hostname", &["sleep", "3600"]);
        let (_, _, container) = env.pod_with_container("my-host", config).await?;
        assert_eq!(
            env.exec_ok(&container, &["hostname"]).await?.trim(),
            "my-host"
        );
        Ok(())
    })
}
