//! Pod and container configs shaped like the kubelet's: what every test starts
//! from and then adjusts for the scenario.

use std::path::Path;

use berth_proto::runtime::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};

/// A pod named `name` in namespace `berth-test` with a fresh UID, its logs
/// under `log_root/<uid>` and its cgroups under `cgroup_parent` (unique to the
/// test, so the fixture can clean them up). PID namespace per container, as
/// the kubelet asks by default.
pub fn pod_config(name: &str, log_root: &Path, cgroup_parent: &str) -> PodSandboxConfig {
    let uid = crate::unique_name("uid");
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.clone(),
            namespace: "berth-test".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_root.join(&uid).display().to_string(),
        labels: [("berth-test/pod".to_string(), name.to_string())].into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(pod_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container `name` of `image` running `command`, logging to `<name>_0.log`
/// in the pod's log directory.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}_0.log"),
        labels: [("berth-test/container".to_string(), name.to_string())].into(),
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(pod_namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The namespaces the kubelet asks for by default: the pod's network and IPC,
/// a PID namespace per container.
fn pod_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}
