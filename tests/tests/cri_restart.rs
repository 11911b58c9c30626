//! berth-cri only: pods and containers survive a crash and restart of the
//! daemon; an exit that happened while it was down is recorded.

use berth_proto::runtime::v1::{ContainerState, ListPodSandboxRequest, PodSandboxState};
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

        let pods = env
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items;
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
