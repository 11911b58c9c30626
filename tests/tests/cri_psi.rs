//! Pressure stall information in container and pod stats: reported from a
//! cgroup v2 cgroup's `*.pressure` files on a unified host, left out on
//! cgroup v1 and hybrid hosts (as containerd does), even though the hybrid
//! cgroup2 mount has pressure files of its own.

use berth_proto::runtime::v1::{
    ContainerStats, ContainerStatsRequest, PodSandboxStatsRequest, PsiStats,
};
use berth_tests::cri::{self, EndpointKind};

/// The whole /sys/fs/cgroup is cgroup v2.
fn unified_host() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn check(psi: Option<PsiStats>, what: &str) {
    if unified_host() {
        let psi = psi.unwrap_or_else(|| panic!("{what}: PSI on a cgroup v2 host"));
        assert!(psi.some.is_some(), "{what}: {psi:?}");
    } else {
        assert_eq!(psi, None, "{what}: no per-cgroup PSI on cgroup v1");
    }
}

#[test]
fn stats_carry_psi_only_from_cgroup_v2() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        if unified_host() && env.kind() != EndpointKind::Berth {
            eprintln!("SKIP: the reference containerd (1.6) reports no PSI");
            return Ok(());
        }
        let config = env.container_config("pressure", &["sleep", "3600"]);
        let (pod, _, id) = env.pod_with_container("psi", config).await?;
        let stats: ContainerStats = env
            .runtime
            .container_stats(ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await?
            .into_inner()
            .stats
            .expect("container stats");
        let cpu = stats.cpu.expect("cpu usage of a running container");
        let memory = stats.memory.expect("memory usage of a running container");
        check(cpu.psi, "container cpu");
        check(memory.psi, "container memory");
        check(stats.io.and_then(|io| io.psi), "container io");

        let pod_stats = env
            .runtime
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await?
            .into_inner()
            .stats
            .expect("pod stats")
            .linux
            .expect("linux pod stats");
        check(pod_stats.cpu.and_then(|c| c.psi), "pod cpu");
        check(pod_stats.io.and_then(|io| io.psi), "pod io");
        Ok(())
    })
}
