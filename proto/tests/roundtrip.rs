//! Deep messages survive encode/decode unchanged, including maps, repeated
//! messages, wrappers, enums and nested oneof-free sub-messages.

use berth_proto::runtime::v1::*;
use prost::Message;
use std::collections::HashMap;

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) {
    let bytes = message.encode_to_vec();
    assert!(!bytes.is_empty(), "a filled message encodes to something");
    let decoded = M::decode(bytes.as_slice()).expect("decode");
    assert_eq!(&decoded, message);
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn resources() -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 256 << 20,
        oom_score_adj: -997,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        unified: labels(&[("memory.high", "200000000")]),
        memory_swap_limit_in_bytes: 512 << 20,
    }
}

fn userns() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Target as i32,
        ipc: NamespaceMode::Node as i32,
        target_id: "abc123".into(),
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: vec![IdMapping {
                host_id: 65536,
                container_id: 0,
                length: 65536,
            }],
            gids: vec![IdMapping {
                host_id: 131072,
                container_id: 0,
                length: 65536,
            }],
        }),
    }
}

fn sandbox_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: "0b1c".into(),
            namespace: "default".into(),
            attempt: 2,
        }),
        hostname: "web-0".into(),
        log_directory: "/var/log/pods/default_web_0b1c".into(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![PortMapping {
            protocol: Protocol::Sctp as i32,
            container_port: 80,
            host_port: 8080,
            host_ip: "127.0.0.1".into(),
        }],
        labels: labels(&[("app", "web")]),
        annotations: labels(&[("kubernetes.io/config.seen", "now")]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/burstable/pod0b1c".into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(userns()),
                selinux_options: Some(SeLinuxOption {
                    user: "system_u".into(),
                    role: "system_r".into(),
                    r#type: "container_t".into(),
                    level: "s0:c1,c2".into(),
                }),
                run_as_user: Some(Int64Value { value: 1000 }),
                run_as_group: Some(Int64Value { value: 0 }),
                readonly_rootfs: true,
                supplemental_groups: vec![10, 20],
                supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
                privileged: true,
                seccomp: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::Localhost as i32,
                    localhost_ref: "/var/lib/kubelet/seccomp/a.json".into(),
                }),
                apparmor: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::Unconfined as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            sysctls: labels(&[("net.ipv4.ip_forward", "1")]),
            overhead: Some(resources()),
            resources: Some(resources()),
        }),
        windows: Some(WindowsPodSandboxConfig {
            security_context: Some(WindowsSandboxSecurityContext {
                run_as_username: "ContainerUser".into(),
                credential_spec: "{}".into(),
                host_process: true,
                namespace_options: Some(WindowsNamespaceOption {
                    network: NamespaceMode::Node as i32,
                }),
            }),
        }),
    }
}

fn image_mount() -> Mount {
    Mount {
        container_path: "/data".into(),
        host_path: String::new(),
        readonly: true,
        selinux_relabel: true,
        propagation: MountPropagation::PropagationPrivate as i32,
        uid_mappings: vec![IdMapping {
            host_id: 1,
            container_id: 2,
            length: 3,
        }],
        gid_mappings: vec![IdMapping {
            host_id: 4,
            container_id: 5,
            length: 6,
        }],
        recursive_read_only: true,
        image: Some(ImageSpec {
            image: "sha256:feed".into(),
            annotations: labels(&[("a", "b")]),
            user_specified_image: "busybox:1.36".into(),
            runtime_handler: "kata".into(),
            image_ref: "sha256:feed".into(),
        }),
        image_sub_path: "etc".into(),
    }
}

#[test]
fn pod_sandbox_config_roundtrips() {
    roundtrip(&sandbox_config());
    roundtrip(&RunPodSandboxRequest {
        config: Some(sandbox_config()),
        runtime_handler: "runc".into(),
    });
}

#[test]
fn container_config_roundtrips() {
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 3,
        }),
        image: Some(ImageSpec {
            image: "docker.io/library/busybox:latest".into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into()],
        args: vec!["-c".into(), "sleep 1".into()],
        working_dir: "/work".into(),
        envs: vec![KeyValue {
            key: "PATH".into(),
            value: "/bin".into(),
        }],
        mounts: vec![image_mount()],
        devices: vec![Device {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "rwm".into(),
        }],
        labels: labels(&[("io.kubernetes.container.name", "app")]),
        annotations: labels(&[("io.kubernetes.container.hash", "1")]),
        log_path: "app/3.log".into(),
        stdin: true,
        stdin_once: true,
        tty: true,
        linux: Some(LinuxContainerConfig {
            resources: Some(resources()),
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    drop_capabilities: vec!["ALL".into()],
                    add_ambient_capabilities: vec!["NET_BIND_SERVICE".into()],
                }),
                privileged: false,
                namespace_options: Some(userns()),
                run_as_user: Some(Int64Value { value: 0 }),
                run_as_group: Some(Int64Value { value: 5 }),
                run_as_username: "nobody".into(),
                readonly_rootfs: true,
                supplemental_groups: vec![1, 2, 3],
                supplemental_groups_policy: SupplementalGroupsPolicy::Merge as i32,
                no_new_privs: true,
                masked_paths: vec!["/proc/kcore".into()],
                readonly_paths: vec!["/proc/sys".into()],
                seccomp: Some(SecurityProfile::default()),
                ..Default::default()
            }),
        }),
        windows: Some(WindowsContainerConfig {
            resources: Some(WindowsContainerResources {
                cpu_shares: 1,
                cpu_count: 2,
                cpu_maximum: 3,
                memory_limit_in_bytes: 4,
                rootfs_size_in_bytes: 5,
                affinity_cpus: vec![WindowsCpuGroupAffinity {
                    cpu_mask: u64::MAX,
                    cpu_group: 1,
                }],
            }),
            security_context: Some(WindowsContainerSecurityContext {
                run_as_username: "u".into(),
                credential_spec: "c".into(),
                host_process: true,
            }),
        }),
        cdi_devices: vec![CdiDevice {
            name: "vendor.com/gpu=0".into(),
        }],
        stop_signal: Signal::Sigrtmaxminus1 as i32,
    };
    roundtrip(&config);
    roundtrip(&CreateContainerRequest {
        pod_sandbox_id: "sb".into(),
        config: Some(config),
        sandbox_config: Some(sandbox_config()),
    });
}

#[test]
fn container_status_roundtrips() {
    let status = ContainerStatus {
        id: "c1".into(),
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 1,
        }),
        state: ContainerState::ContainerExited as i32,
        created_at: 1,
        started_at: 2,
        finished_at: 3,
        exit_code: 137,
        image: Some(ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        image_ref: "docker.io/library/busybox@sha256:00".into(),
        reason: "OOMKilled".into(),
        message: "memory limit".into(),
        labels: labels(&[("l", "1")]),
        annotations: labels(&[("a", "2")]),
        mounts: vec![image_mount()],
        log_path: "/var/log/pods/x/app/1.log".into(),
        resources: Some(ContainerResources {
            linux: Some(resources()),
            windows: None,
        }),
        image_id: "sha256:00".into(),
        user: Some(ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: 1000,
                gid: 1000,
                supplemental_groups: vec![1000, 4],
            }),
        }),
        stop_signal: Signal::Sigterm as i32,
    };
    roundtrip(&status);
    roundtrip(&ContainerEventResponse {
        container_id: "c1".into(),
        container_event_type: ContainerEventType::ContainerStoppedEvent as i32,
        created_at: 42,
        pod_sandbox_status: Some(PodSandboxStatus {
            id: "sb".into(),
            state: PodSandboxState::SandboxNotready as i32,
            network: Some(PodSandboxNetworkStatus {
                ip: "10.0.0.2".into(),
                additional_ips: vec![PodIp {
                    ip: "fd00::2".into(),
                }],
            }),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(userns()),
                }),
            }),
            ..Default::default()
        }),
        containers_statuses: vec![status],
    });
}

#[test]
fn stats_with_psi_roundtrip() {
    let psi = PsiStats {
        full: Some(PsiData {
            total: 10,
            avg10: 0.5,
            avg60: 1.5,
            avg300: 2.5,
        }),
        some: Some(PsiData::default()),
    };
    roundtrip(&PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: "sb".into(),
            ..Default::default()
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: Some(CpuUsage {
                timestamp: 1,
                usage_core_nano_seconds: Some(UInt64Value { value: 2 }),
                usage_nano_cores: Some(UInt64Value { value: 3 }),
                psi: Some(psi),
            }),
            io: Some(IoUsage {
                timestamp: 4,
                psi: Some(psi),
            }),
            containers: vec![ContainerStats {
                swap: Some(SwapUsage {
                    timestamp: 5,
                    swap_available_bytes: Some(UInt64Value { value: 6 }),
                    swap_usage_bytes: Some(UInt64Value { value: 7 }),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        windows: None,
    });
}
