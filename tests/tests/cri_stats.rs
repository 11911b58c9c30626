//! Container and pod sandbox stats as the kubelet reads them: memory working
//! set, CPU usage, writable layer, filters, pod network and process counts;
//! the pause process in the pod cgroup; and the berth-only RPCs around them
//! (metrics, UpdatePodSandboxResources, CheckpointContainer), which
//! containerd 1.6 does not serve.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use berth_proto::runtime::v1::{
    CheckpointContainerRequest, ContainerStats, ContainerStatsFilter, ContainerStatsRequest,
    LinuxContainerResources, ListContainerStatsRequest, ListMetricDescriptorsRequest,
    ListPodSandboxMetricsRequest, ListPodSandboxStatsRequest, PodSandboxStats,
    PodSandboxStatsFilter, PodSandboxStatsRequest, UpdatePodSandboxResourcesRequest,
};
use berth_tests::cri::{self, CriEnv, EndpointKind};

const MIB: u64 = 1024 * 1024;
const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `probe` until it yields `Some`, failing after DEADLINE naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn container_stats(env: &CriEnv, id: &str) -> anyhow::Result<ContainerStats> {
    env.runtime
        .clone()
        .container_stats(ContainerStatsRequest {
            container_id: id.to_string(),
        })
        .await?
        .into_inner()
        .stats
        .ok_or_else(|| anyhow::anyhow!("ContainerStats {id} without stats"))
}

async fn pod_stats(env: &mut CriEnv, id: &str) -> anyhow::Result<PodSandboxStats> {
    env.runtime
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await?
        .into_inner()
        .stats
        .ok_or_else(|| anyhow::anyhow!("PodSandboxStats {id} without stats"))
}

/// The ids ListContainerStats returns for `filter`, sorted.
async fn listed_container_ids(
    env: &CriEnv,
    filter: ContainerStatsFilter,
) -> anyhow::Result<Vec<String>> {
    let request = ListContainerStatsRequest {
        filter: Some(filter),
    };
    let stats = env.runtime.clone().list_container_stats(request).await?;
    let ids = stats.into_inner().stats.into_iter();
    Ok(sorted(
        ids.filter_map(|s| s.attributes.map(|a| a.id)).collect(),
    ))
}

/// The ids ListPodSandboxStats returns for `filter`, sorted.
async fn listed_pod_ids(
    env: &CriEnv,
    filter: PodSandboxStatsFilter,
) -> anyhow::Result<Vec<String>> {
    let request = ListPodSandboxStatsRequest {
        filter: Some(filter),
    };
    let stats = env.runtime.clone().list_pod_sandbox_stats(request).await?;
    let ids = stats.into_inner().stats.into_iter();
    Ok(sorted(
        ids.filter_map(|s| s.attributes.map(|a| a.id)).collect(),
    ))
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// A label selector matching one label.
fn label(key: &str, value: &str) -> HashMap<String, String> {
    [(key.to_string(), value.to_string())].into()
}

fn value(v: &Option<berth_proto::runtime::v1::UInt64Value>) -> u64 {
    v.as_ref().map(|v| v.value).unwrap_or(0)
}

fn cpu_total(stats: &ContainerStats) -> u64 {
    stats
        .cpu
        .as_ref()
        .map(|c| value(&c.usage_core_nano_seconds))
        .unwrap_or(0)
}

fn layer_bytes(stats: &ContainerStats) -> (u64, u64) {
    stats
        .writable_layer
        .as_ref()
        .map(|l| (value(&l.used_bytes), value(&l.inodes_used)))
        .unwrap_or((0, 0))
}

/// The v1 `memory` cgroup path of `pid`.
fn memory_cgroup_of(pid: u32) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
        .ok_or_else(|| anyhow::anyhow!("no memory cgroup for {pid}: {text}"))
}

#[test]
fn working_set_covers_memory_a_container_holds() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        // A shell variable of 32 MiB stays resident while the shell waits (not
        // exec: the shell itself must stay).
        let config = env.container_config(
            "holder",
            &[
                "sh",
                "-c",
                "x=$(head -c 33554432 /dev/zero | tr '\\0' a); touch /tmp/held; sleep 3600 & wait",
            ],
        );
        let (_, _, id) = env.pod_with_container("memory", config).await?;
        env.exec_until_ok(&id, &["test", "-e", "/tmp/held"]).await?;
        let stats = container_stats(&env, &id).await?;
        let attributes = stats.attributes.clone().expect("attributes");
        assert_eq!(attributes.id, id);
        assert_eq!(attributes.metadata.expect("metadata").name, "holder");
        let memory = stats.memory.expect("memory stats");
        let working_set = value(&memory.working_set_bytes);
        assert!(
            working_set >= 32 * MIB,
            "working set {working_set}: {memory:?}"
        );
        assert!(value(&memory.usage_bytes) >= working_set, "{memory:?}");
        assert!(value(&memory.rss_bytes) >= 32 * MIB, "{memory:?}");
        assert!(value(&memory.page_faults) > 0, "{memory:?}");
        assert!(cpu_total(&stats) > 0, "{stats:?}");
        Ok(())
    })
}

#[test]
fn cpu_usage_grows_for_a_busy_container() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("spinner", &["sh", "-c", "while :; do :; done"]);
        let (_, _, id) = env.pod_with_container("cpu", config).await?;
        let first = cpu_total(&container_stats(&env, &id).await?);
        // 100 ms of CPU more than the first reading.
        let later = eventually("cpu usage to grow", || {
            let env = &env;
            let id = id.clone();
            async move {
                let stats = container_stats(env, &id).await?;
                Ok((cpu_total(&stats) > first + 100_000_000).then_some(stats))
            }
        })
        .await?;
        let nano_cores = value(&later.cpu.expect("cpu").usage_nano_cores);
        assert!(nano_cores > 0, "a spinning container uses some CPU");
        Ok(())
    })
}

#[test]
fn writable_layer_grows_after_writing_a_file() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("writer", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("layer", config).await?;
        let (bytes_before, inodes_before) = layer_bytes(&container_stats(&env, &id).await?);
        env.exec_ok(
            &id,
            &[
                "dd",
                "if=/dev/zero",
                "of=/data.bin",
                "bs=1048576",
                "count=8",
            ],
        )
        .await?;
        env.exec_ok(&id, &["sync"]).await?;
        // containerd refreshes its layer usage in the background: wait for it.
        let stats = eventually("the writable layer to grow by 8 MiB", || {
            let env = &env;
            let id = id.clone();
            async move {
                let stats = container_stats(env, &id).await?;
                Ok((layer_bytes(&stats).0 >= bytes_before + 8 * MIB).then_some(stats))
            }
        })
        .await?;
        let (_, inodes_after) = layer_bytes(&stats);
        assert!(
            inodes_after > inodes_before,
            "{inodes_before} -> {inodes_after}"
        );
        let mountpoint = stats
            .writable_layer
            .and_then(|l| l.fs_id)
            .map(|f| f.mountpoint)
            .unwrap_or_default();
        assert!(!mountpoint.is_empty(), "the layer's filesystem is named");
        Ok(())
    })
}

#[test]
fn list_container_stats_filters_by_id_pod_and_labels() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let (pod_a, config_a, a1) = env
            .pod_with_container("stats-a", env.container_config("a1", &["sleep", "3600"]))
            .await?;
        let a2 = env
            .create_container(
                &pod_a,
                &config_a,
                env.container_config("a2", &["sleep", "3600"]),
            )
            .await?;
        env.start_container(&a2).await?;
        let (pod_b, _, b1) = env
            .pod_with_container("stats-b", env.container_config("b1", &["sleep", "3600"]))
            .await?;
        let cases = [
            (
                ContainerStatsFilter::default(),
                vec![a1.clone(), a2.clone(), b1.clone()],
            ),
            (
                ContainerStatsFilter {
                    pod_sandbox_id: pod_a.clone(),
                    ..Default::default()
                },
                vec![a1.clone(), a2.clone()],
            ),
            (
                ContainerStatsFilter {
                    id: b1.clone(),
                    ..Default::default()
                },
                vec![b1.clone()],
            ),
            (
                ContainerStatsFilter {
                    label_selector: label("berth-test/container", "a2"),
                    ..Default::default()
                },
                vec![a2.clone()],
            ),
            (
                ContainerStatsFilter {
                    pod_sandbox_id: pod_b.clone(),
                    label_selector: label("berth-test/container", "a1"),
                    ..Default::default()
                },
                vec![],
            ),
        ];
        for (filter, expected) in cases {
            let listed = listed_container_ids(&env, filter.clone()).await?;
            assert_eq!(listed, sorted(expected), "{filter:?}");
        }
        Ok(())
    })
}

#[test]
fn pod_stats_report_cgroup_network_processes_and_containers() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("web", &["sleep", "3600"]);
        let (pod, _, id) = env.pod_with_container("podstats", config).await?;
        // Any packet to an on-link address goes out of eth0 (ARP at least).
        env.exec_ok(
            &id,
            &[
                "sh",
                "-c",
                "wget -q -T 2 -O /dev/null http://10.88.0.1:9/ || true",
            ],
        )
        .await?;
        let stats = pod_stats(&mut env, &pod).await?;
        assert_eq!(stats.attributes.as_ref().expect("attributes").id, pod);
        let linux = stats.linux.expect("linux pod stats");
        assert!(
            value(&linux.cpu.as_ref().expect("pod cpu").usage_core_nano_seconds) > 0,
            "{:?}",
            linux.cpu
        );
        assert!(
            value(&linux.memory.as_ref().expect("pod memory").working_set_bytes) > 0,
            "{:?}",
            linux.memory
        );
        // berth counts the pod cgroup's processes (pause and sleep at least);
        // containerd 1.6 counts those of the pause task only.
        let processes = value(&linux.process.as_ref().expect("process stats").process_count);
        let minimum = if env.kind() == EndpointKind::Berth {
            2
        } else {
            1
        };
        assert!(processes >= minimum, "{processes} processes");
        let network = linux.network.expect("network stats");
        let eth0 = network.default_interface.expect("default interface");
        assert_eq!(eth0.name, "eth0");
        assert!(value(&eth0.tx_bytes) > 0, "{eth0:?}");
        // containerd 1.6 fills in the default interface only.
        if env.kind() == EndpointKind::Berth {
            assert!(network.interfaces.iter().any(|i| i.name == "eth0"));
        }
        let containers: Vec<String> = linux
            .containers
            .iter()
            .filter_map(|c| c.attributes.as_ref().map(|a| a.id.clone()))
            .collect();
        assert_eq!(containers, vec![id]);

        let cases = [
            (
                PodSandboxStatsFilter {
                    id: pod.clone(),
                    ..Default::default()
                },
                vec![pod.clone()],
            ),
            (
                PodSandboxStatsFilter {
                    label_selector: label("berth-test/pod", "podstats"),
                    ..Default::default()
                },
                vec![pod.clone()],
            ),
            (
                PodSandboxStatsFilter {
                    label_selector: label("berth-test/pod", "other"),
                    ..Default::default()
                },
                vec![],
            ),
        ];
        for (filter, expected) in cases {
            let listed = listed_pod_ids(&env, filter.clone()).await?;
            assert_eq!(listed, sorted(expected), "{filter:?}");
        }
        Ok(())
    })
}

#[test]
fn pause_runs_in_the_pod_cgroup() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.pod_config("placed");
        let pod = env.run_pod(&config).await?;
        let pid = env.pause_pid(&pod).await?;
        let cgroup = memory_cgroup_of(pid)?;
        assert!(
            cgroup.starts_with(&format!("{}/", env.cgroup_parent())),
            "pause in {cgroup}, not below {}",
            env.cgroup_parent()
        );
        let procs = berth_tests::cgroup::read("memory", &cgroup, "cgroup.procs")
            .ok_or_else(|| anyhow::anyhow!("no cgroup.procs in {cgroup}"))?;
        assert!(
            procs.lines().any(|p| p.trim() == pid.to_string()),
            "{pid} not in {cgroup}/cgroup.procs: {procs}"
        );
        Ok(())
    })
}

/// berth-only: containerd 1.6 ignores the overhead for runc pods and has no
/// UpdatePodSandboxResources.
#[test]
fn pod_overhead_limits_the_sandbox_cgroup_and_can_be_updated() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        if env.kind() != EndpointKind::Berth {
            eprintln!("SKIP: berth-only (pod overhead on the sandbox cgroup)");
            return Ok(());
        }
        let mut config = env.pod_config("overhead");
        config.linux.as_mut().unwrap().overhead = Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 * MIB as i64,
            ..Default::default()
        });
        let pod = env.run_pod(&config).await?;
        let cgroup = memory_cgroup_of(env.pause_pid(&pod).await?)?;
        let limit = || {
            berth_tests::cgroup::read("memory", &cgroup, "memory.limit_in_bytes")
                .unwrap_or_default()
        };
        assert_eq!(limit(), (64 * MIB).to_string());

        env.runtime
            .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: pod.clone(),
                overhead: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 96 * MIB as i64,
                    ..Default::default()
                }),
                resources: None,
            })
            .await?;
        assert_eq!(limit(), (96 * MIB).to_string());

        let missing = env
            .runtime
            .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: "no-such-pod".into(),
                overhead: None,
                resources: None,
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
        Ok(())
    })
}

/// berth-only: containerd 1.6 has no CRI metrics RPCs.
#[test]
fn pod_metrics_use_cadvisor_names_and_labels() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        if env.kind() != EndpointKind::Berth {
            eprintln!("SKIP: berth-only (ListMetricDescriptors, ListPodSandboxMetrics)");
            return Ok(());
        }
        let config = env.container_config("measured", &["sleep", "3600"]);
        let (pod, _, id) = env.pod_with_container("metrics", config).await?;
        let descriptors = env
            .runtime
            .list_metric_descriptors(ListMetricDescriptorsRequest {})
            .await?
            .into_inner()
            .descriptors;
        for name in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_memory_usage_bytes",
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
        ] {
            assert!(
                descriptors.iter().any(|d| d.name == name),
                "{name} described"
            );
        }
        let keys = |name: &str| {
            descriptors
                .iter()
                .find(|d| d.name == name)
                .map(|d| d.label_keys.clone())
                .unwrap_or_default()
        };

        let pods = env
            .runtime
            .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await?
            .into_inner()
            .pod_metrics;
        let pod_metrics = pods
            .iter()
            .find(|p| p.pod_sandbox_id == pod)
            .expect("metrics of the pod");
        let received = pod_metrics
            .metrics
            .iter()
            .find(|m| m.name == "container_network_receive_bytes_total")
            .expect("network metrics of the pod");
        let interface = keys(&received.name).iter().position(|k| k == "interface");
        assert_eq!(
            interface.map(|i| received.label_values[i].as_str()),
            Some("eth0")
        );
        let container = pod_metrics
            .container_metrics
            .iter()
            .find(|c| c.container_id == id)
            .expect("metrics of the container");
        let working_set = container
            .metrics
            .iter()
            .find(|m| m.name == "container_memory_working_set_bytes")
            .expect("working set metric");
        assert!(value(&working_set.value) > 0, "{working_set:?}");
        assert_eq!(
            working_set.label_values.len(),
            keys(&working_set.name).len(),
            "a value per label key"
        );
        assert_eq!(working_set.label_values[0], id, "id label");
        assert_eq!(working_set.label_values[1], "measured", "name label");
        Ok(())
    })
}

/// berth-only: containerd 1.6 answers UNIMPLEMENTED.
#[test]
fn checkpoint_is_refused_without_criu_after_validation() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        if env.kind() != EndpointKind::Berth {
            eprintln!("SKIP: berth-only (CheckpointContainer)");
            return Ok(());
        }
        let config = env.container_config("frozen", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("checkpoint", config).await?;
        let no_location = env
            .runtime
            .checkpoint_container(CheckpointContainerRequest {
                container_id: id.clone(),
                location: String::new(),
                timeout: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(no_location.code(), tonic::Code::InvalidArgument);
        assert!(
            no_location.message().contains("location"),
            "{no_location:?}"
        );
        let location = env.dir().join("checkpoint.tar");
        let refused = env
            .runtime
            .checkpoint_container(CheckpointContainerRequest {
                container_id: id.clone(),
                location: location.display().to_string(),
                timeout: 10,
            })
            .await
            .unwrap_err();
        // Without criu on PATH (these machines) FailedPrecondition; with it,
        // Unimplemented: either way the error names CRIU.
        assert!(
            matches!(
                refused.code(),
                tonic::Code::FailedPrecondition | tonic::Code::Unimplemented
            ),
            "{refused:?}"
        );
        assert!(refused.message().contains("CRIU"), "{refused:?}");
        assert!(!location.exists(), "nothing written");
        Ok(())
    })
}
