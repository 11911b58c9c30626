//! Namespaces: pod-shared network, host network, host PID and host IPC.

use berth_proto::runtime::v1::{ContainerConfig, NamespaceMode, NamespaceOption, PodSandboxConfig};
use berth_tests::cri::{self, CriEnv};

/// `readlink /proc/self/ns/<kind>` of this test thread (which lives in the
/// test's network namespace, the "host" the daemon sees).
fn own_namespace(kind: &str) -> String {
    std::fs::read_link(format!("/proc/thread-self/ns/{kind}"))
        .expect("own namespace link")
        .display()
        .to_string()
}

fn set_namespaces(
    pod: &mut PodSandboxConfig,
    container: &mut ContainerConfig,
    options: NamespaceOption,
) {
    pod.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options = Some(options.clone());
    container
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options = Some(options);
}

async fn run_with(
    env: &mut CriEnv,
    name: &str,
    options: NamespaceOption,
) -> anyhow::Result<String> {
    let busybox = env.images.busybox.clone();
    env.pull(&busybox).await?;
    let mut pod_config = env.pod_config(name);
    let mut config = env.container_config(name, &["sleep", "3600"]);
    if options.network == NamespaceMode::Node as i32 {
        // Like the kubelet: a host-network pod keeps the host's hostname.
        pod_config.hostname.clear();
    }
    set_namespaces(&mut pod_config, &mut config, options);
    let pod = env.run_pod(&pod_config).await?;
    let id = env.create_container(&pod, &pod_config, config).await?;
    env.start_container(&id).await?;
    Ok(id)
}

#[test]
fn containers_of_a_pod_share_its_network_namespace() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("a", &["sleep", "3600"]);
        let (pod, pod_config, a) = env.pod_with_container("shared-net", config).await?;
        let config = env.container_config("b", &["sleep", "3600"]);
        let b = env.create_container(&pod, &pod_config, config).await?;
        env.start_container(&b).await?;
        let net_a = env.exec_ok(&a, &["readlink", "/proc/self/ns/net"]).await?;
        let net_b = env.exec_ok(&b, &["readlink", "/proc/self/ns/net"]).await?;
        assert_eq!(net_a, net_b);
        assert_ne!(
            net_a.trim(),
            own_namespace("net"),
            "pod network is not the host's"
        );
        Ok(())
    })
}

#[test]
fn host_network_pod_uses_the_host_network_namespace() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let options = NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        };
        let id = run_with(&mut env, "host-net", options).await?;
        let net = env.exec_ok(&id, &["readlink", "/proc/self/ns/net"]).await?;
        assert_eq!(net.trim(), own_namespace("net"));
        Ok(())
    })
}

#[test]
fn host_pid_pod_sees_host_processes() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let options = NamespaceOption {
            network: NamespaceMode::Pod as i32,
            pid: NamespaceMode::Node as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        };
        let id = run_with(&mut env, "host-pid", options).await?;
        let pid_ns = env.exec_ok(&id, &["readlink", "/proc/self/ns/pid"]).await?;
        assert_eq!(pid_ns.trim(), own_namespace("pid"));
        let test_pid = std::process::id().to_string();
        env.exec_ok(&id, &["test", "-d", &format!("/proc/{test_pid}")])
            .await?;
        Ok(())
    })
}

#[test]
fn container_pid_namespace_starts_at_one() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("pid1", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("own-pid", config).await?;
        let comm = env.exec_ok(&id, &["cat", "/proc/1/comm"]).await?;
        assert_eq!(comm.trim(), "sleep", "the container's command is PID 1");
        Ok(())
    })
}

#[test]
fn host_ipc_pod_uses_the_host_ipc_namespace() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let options = NamespaceOption {
            network: NamespaceMode::Pod as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Node as i32,
            ..Default::default()
        };
        let id = run_with(&mut env, "host-ipc", options).await?;
        let ipc = env.exec_ok(&id, &["readlink", "/proc/self/ns/ipc"]).await?;
        assert_eq!(ipc.trim(), own_namespace("ipc"));
        // The default keeps IPC private to the pod.
        let config = env.container_config("private-ipc", &["sleep", "3600"]);
        let (_, _, private) = env.pod_with_container("pod-ipc", config).await?;
        let ipc = env
            .exec_ok(&private, &["readlink", "/proc/self/ns/ipc"])
            .await?;
        assert_ne!(ipc.trim(), own_namespace("ipc"));
        Ok(())
    })
}
