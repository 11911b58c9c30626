//! berth-cri only: pods and containers survive a crash and restart of the
//! daemon; an exit that happened while it was down is recorded. A crashed
//! per-pod supervisor is noticed and its pod reconciled.

use berth_proto::runtime::v1::{ContainerState, PodSandboxState, PodSandboxStatusRequest};
use berth_tests::cri::{self, EndpointKind};

#[test]
fn pods_and_containers_survive_a_daemon_restart() -> anyhow::Result<()> {
    if EndpointKind::from_env()? != EndpointKind::Berth {
        eprintln!(
            "SKIP: restart with running pods is a berth-cri guarantee (containerd's shims differ)"
        );
        return Ok(());
    }
    cri::run(|mut env| async move {
        let config = env.container_config("survivor", &["sleep", "3600"]);
        let (pod, pod_config, survivor) = env.pod_with_container("restart", config).await?;
        let config = env.container_config(
            "leaver",
            &[
                "sh",
                "-c",
                "trap 'exit 42' TERM; touch /tmp/ready; sleep 3600 & wait",
            ],
        );
        let leaver = env.create_container(&pod, &pod_config, config).await?;
        env.start_container(&leaver).await?;
        env.exec_until_ok(&leaver, &["test", "-e", "/tmp/ready"])
            .await?;
        // Where the leaver's processes are, to end it from outside while the
        // daemon is down.
        let cgroups = env.exec_ok(&leaver, &["cat", "/proc/self/cgroup"]).await?;
        let pids_path = cgroups
            .lines()
            .find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string()))
            .expect("pids cgroup");

        env.daemon.kill()?;
        let procs =
            berth_tests::cgroup::read("pids", &pids_path, "cgroup.procs").unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert!(
            !pids.is_empty(),
            "leaver keeps running while the daemon is down"
        );
        for pid in pids {
            // SAFETY: kill(2) on the leaver's own processes.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        berth_tests::wait_for(std::time::Duration::from_secs(30), "leaver exited", || {
            berth_tests::cgroup::read("pids", &pids_path, "cgroup.procs")
                .is_none_or(|p| p.trim().is_empty())
                .then_some(())
        })?;

        env.daemon.restart().await?;
        let channel = env.daemon.connect().await?;
        env.runtime = berth_proto::runtime_client(channel.clone());
        env.image = berth_proto::image_client(channel);

        let pods = env.list_pods().await?;
        let listed = pods
            .iter()
            .find(|p| p.id == pod)
            .expect("pod listed after restart");
        assert_eq!(listed.state, PodSandboxState::SandboxReady as i32);

        let status = env.container_status(&survivor).await?;
        assert_eq!(
            status.state,
            ContainerState::ContainerRunning as i32,
            "{status:?}"
        );
        assert_eq!(
            env.exec_ok(&survivor, &["echo", "still here"]).await?,
            "still here\n"
        );

        let exited = env
            .wait_container_state(&leaver, ContainerState::ContainerExited)
            .await?;
        assert_eq!(exited.exit_code, 42, "{exited:?}");

        // The restarted daemon runs new pods too.
        let config = env.container_config("newcomer", &["sleep", "3600"]);
        let (_, _, newcomer) = env.pod_with_container("after-restart", config).await?;
        env.exec_ok(&newcomer, &["true"]).await?;
        Ok(())
    })
}

/// The pod's supervisor process (its command line names the pod's dir).
fn supervisor_of(env: &berth_tests::cri::CriEnv, pod: &str) -> Option<u32> {
    env.daemon.processes().into_iter().find(|pid| {
        *pid != env.daemon.pid()
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(pod))
    })
}

/// Processes in the container's pids cgroup, as the container sees it.
async fn cgroup_of(env: &mut berth_tests::cri::CriEnv, id: &str) -> anyhow::Result<String> {
    let cgroups = env.exec_ok(id, &["cat", "/proc/self/cgroup"]).await?;
    Ok(cgroups
        .lines()
        .find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string()))
        .expect("pids cgroup"))
}

#[test]
fn a_killed_supervisor_is_noticed_and_its_pod_reconciled() -> anyhow::Result<()> {
    if EndpointKind::from_env()? != EndpointKind::Berth {
        eprintln!("SKIP: berth-cri's per-pod supervisor (containerd's shims are tested upstream)");
        return Ok(());
    }
    cri::run(|mut env| async move {
        let config = env.container_config("worker", &["sleep", "3600"]);
        let (pod, pod_config, worker) = env.pod_with_container("orphaned", config).await?;
        let config = env.container_config("finished", &["sh", "-c", "exit 3"]);
        let finished = env.create_container(&pod, &pod_config, config).await?;
        env.start_container(&finished).await?;
        env.wait_container_state(&finished, ContainerState::ContainerExited)
            .await?;
        let worker_cgroup = cgroup_of(&mut env, &worker).await?;
        let config = env.container_config("bystander", &["sleep", "3600"]);
        let (other_pod, _, bystander) = env.pod_with_container("bystander", config).await?;

        let supervisor = supervisor_of(&env, &pod).expect("the pod's supervisor");
        // SAFETY: kill(2) on the supervisor this test's daemon started.
        assert_eq!(unsafe { libc::kill(supervisor as i32, libc::SIGKILL) }, 0);

        // Noticed without being asked about that container first.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let status = env
                .runtime
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: pod.clone(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status
                .expect("status");
            if status.state == PodSandboxState::SandboxNotready as i32 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sandbox still ready after its supervisor died"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let status = env.container_status(&worker).await?;
        assert_eq!(
            status.state,
            ContainerState::ContainerExited as i32,
            "{status:?}"
        );
        assert_eq!(status.exit_code, 137, "{status:?}");
        assert_eq!(status.reason, "Error", "{status:?}");
        assert!(status.message.contains("supervisor"), "{status:?}");
        let left =
            berth_tests::cgroup::read("pids", &worker_cgroup, "cgroup.procs").unwrap_or_default();
        assert!(left.trim().is_empty(), "worker processes left: {left}");

        // The exit recorded before the crash is kept.
        let status = env.container_status(&finished).await?;
        assert_eq!(
            (status.state, status.exit_code),
            (ContainerState::ContainerExited as i32, 3),
            "{status:?}"
        );
        let listed = env.pod_containers(&pod).await?;
        assert_eq!(listed.len(), 2, "{listed:?}");

        // No new containers in a sandbox that lost its supervisor: the
        // kubelet replaces a NOTREADY sandbox instead.
        let config = env.container_config("late", &["sleep", "3600"]);
        let err = env
            .create_container(&pod, &pod_config, config)
            .await
            .unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().expect("gRPC status");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("supervisor"), "{status:?}");

        // Other pods are untouched.
        assert_eq!(env.exec_ok(&bystander, &["echo", "ok"]).await?, "ok\n");
        let pods = env.list_pods().await?;
        let other = pods.iter().find(|p| p.id == other_pod).expect("other pod");
        assert_eq!(other.state, PodSandboxState::SandboxReady as i32);

        // And the broken pod is removed like any other.
        env.stop_and_remove_pod(&pod).await?;
        let pods = env.list_pods().await?;
        assert!(pods.iter().all(|p| p.id != pod), "{pods:?}");
        Ok(())
    })
}
