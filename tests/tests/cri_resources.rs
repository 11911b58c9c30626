//! Linux resources: limits at create and UpdateContainerResources, observed
//! in the container's cgroup (cgroup v1 on the test machines).

use berth_proto::runtime::v1::{LinuxContainerResources, UpdateContainerResourcesRequest};
use berth_tests::cri::{self, CriEnv};

const MIB: i64 = 1024 * 1024;

/// The container's cgroup path in the v1 hierarchy `controller`, from its
/// own /proc/self/cgroup (no cgroup namespace on cgroup v1).
async fn cgroup_path(env: &mut CriEnv, id: &str, controller: &str) -> anyhow::Result<String> {
    let cgroups = env.exec_ok(id, &["cat", "/proc/self/cgroup"]).await?;
    cgroups
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .ok_or_else(|| anyhow::anyhow!("no {controller} cgroup in {cgroups}"))
}

fn read_cgroup(controller: &str, path: &str, file: &str) -> anyhow::Result<i64> {
    let value = berth_tests::cgroup::read(controller, path, file)
        .ok_or_else(|| anyhow::anyhow!("cannot read {controller}{path}/{file}"))?;
    Ok(value.parse()?)
}

#[test]
fn resources_at_create_and_update_reach_the_cgroup() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let mut config = env.container_config("limited", &["sleep", "3600"]);
        config.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 * MIB,
            cpu_shares: 512,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            ..Default::default()
        });
        let (_, _, id) = env.pod_with_container("resources", config).await?;
        let memory = cgroup_path(&mut env, &id, "memory").await?;
        let cpu = cgroup_path(&mut env, &id, "cpu").await?;
        assert!(
            memory.starts_with(env.cgroup_parent()),
            "{memory} under the pod's cgroup parent"
        );
        assert_eq!(
            read_cgroup("memory", &memory, "memory.limit_in_bytes")?,
            64 * MIB
        );
        assert_eq!(read_cgroup("cpu", &cpu, "cpu.shares")?, 512);
        assert_eq!(read_cgroup("cpu", &cpu, "cpu.cfs_quota_us")?, 50_000);

        env.runtime
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 128 * MIB,
                    cpu_shares: 1024,
                    cpu_period: 100_000,
                    cpu_quota: 200_000,
                    ..Default::default()
                }),
                windows: None,
                annotations: Default::default(),
            })
            .await?;
        assert_eq!(
            read_cgroup("memory", &memory, "memory.limit_in_bytes")?,
            128 * MIB
        );
        assert_eq!(read_cgroup("cpu", &cpu, "cpu.shares")?, 1024);
        assert_eq!(read_cgroup("cpu", &cpu, "cpu.cfs_quota_us")?, 200_000);
        // The container keeps running through the update.
        env.exec_ok(&id, &["true"]).await?;
        Ok(())
    })
}

#[test]
fn memory_limit_kills_with_oom_killed_reason() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let mut config = env.container_config(
            "hog",
            // Holds ever more memory in a shell variable until the limit hits.
            &[
                "sh",
                "-c",
                "x=$(head -c 1000000 /dev/zero | tr '\\0' a); while true; do x=$x$x; done",
            ],
        );
        config.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 32 * MIB,
            memory_swap_limit_in_bytes: 32 * MIB,
            ..Default::default()
        });
        let (_, _, id) = env.pod_with_container("oom", config).await?;
        let status = env
            .wait_container_state(
                &id,
                berth_proto::runtime::v1::ContainerState::ContainerExited,
            )
            .await?;
        assert_eq!(status.reason, "OOMKilled", "{status:?}");
        assert_eq!(status.exit_code, 137, "{status:?}");
        Ok(())
    })
}
