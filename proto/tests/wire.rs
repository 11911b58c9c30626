//! Field numbers and enum values against hand-assembled protobuf bytes.
//!
//! Each case sets a single field so its encoding is exactly one tag plus
//! value; a field carrying the wrong number (or type) in api.proto changes
//! the tag byte and fails. Numbers are upstream cri-api's.

use berth_proto::runtime::v1::*;
use prost::Message;

/// Encodes `message` to exactly `bytes` and decodes `bytes` back to it.
#[track_caller]
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(message: M, bytes: &[u8]) {
    assert_eq!(message.encode_to_vec(), bytes, "encoding of {message:?}");
    assert_eq!(M::decode(bytes).expect("decode"), message);
}

/// Tag of a length-delimited field (< 16: one byte).
const fn len_tag(field: u8) -> u8 {
    field << 3 | 2
}

/// Tag of a varint field (< 16: one byte).
const fn varint_tag(field: u8) -> u8 {
    field << 3
}

#[test]
fn version_messages() {
    assert_wire(
        VersionRequest {
            version: "x".into(),
        },
        &[len_tag(1), 1, b'x'],
    );
    assert_wire(
        VersionResponse {
            runtime_api_version: "v1".into(),
            ..Default::default()
        },
        &[len_tag(4), 2, b'v', b'1'],
    );
}

#[test]
fn pod_sandbox_config_fields() {
    assert_wire(
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: "p".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        &[len_tag(8), 3, len_tag(1), 1, b'p'],
    );
    assert_wire(
        PodSandboxConfig {
            windows: Some(WindowsPodSandboxConfig::default()),
            ..Default::default()
        },
        &[len_tag(9), 0],
    );
    assert_wire(
        PodSandboxConfig {
            log_directory: "d".into(),
            ..Default::default()
        },
        &[len_tag(3), 1, b'd'],
    );
    assert_wire(
        LinuxPodSandboxConfig {
            resources: Some(LinuxContainerResources {
                memory_swap_limit_in_bytes: 1,
                ..Default::default()
            }),
            ..Default::default()
        },
        &[len_tag(5), 2, varint_tag(10), 1],
    );
}

#[test]
fn sandbox_security_context_fields() {
    assert_wire(
        LinuxSandboxSecurityContext {
            run_as_group: Some(Int64Value { value: 7 }),
            ..Default::default()
        },
        &[len_tag(8), 2, varint_tag(1), 7],
    );
    assert_wire(
        LinuxSandboxSecurityContext {
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        },
        &[varint_tag(11), 1],
    );
    assert_wire(
        LinuxSandboxSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: security_profile::ProfileType::Localhost as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
        &[len_tag(10), 2, varint_tag(1), 2],
    );
    // Packed repeated int64.
    assert_wire(
        LinuxSandboxSecurityContext {
            supplemental_groups: vec![1, 2],
            ..Default::default()
        },
        &[len_tag(5), 2, 1, 2],
    );
}

#[test]
fn namespace_and_user_namespace_fields() {
    assert_wire(
        NamespaceOption {
            pid: NamespaceMode::Target as i32,
            ..Default::default()
        },
        &[varint_tag(2), 3],
    );
    assert_wire(
        NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
        &[len_tag(5), 2, varint_tag(1), 2],
    );
    assert_wire(
        UserNamespace {
            gids: vec![IdMapping {
                host_id: 1,
                container_id: 2,
                length: 3,
            }],
            ..Default::default()
        },
        &[
            len_tag(3),
            6,
            varint_tag(1),
            1,
            varint_tag(2),
            2,
            varint_tag(3),
            3,
        ],
    );
}

#[test]
fn container_config_fields() {
    assert_wire(
        ContainerConfig {
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        },
        &[len_tag(15), 0],
    );
    assert_wire(
        ContainerConfig {
            windows: Some(WindowsContainerConfig::default()),
            ..Default::default()
        },
        &[0x82, 0x01, 0],
    );
    // CDI_devices = 17: two-byte tag.
    assert_wire(
        ContainerConfig {
            cdi_devices: vec![CdiDevice { name: "g".into() }],
            ..Default::default()
        },
        &[0x8a, 0x01, 3, len_tag(1), 1, b'g'],
    );
    // stop_signal = 18, SIGTERM = 23.
    assert_wire(
        ContainerConfig {
            stop_signal: Signal::Sigterm as i32,
            ..Default::default()
        },
        &[0x90, 0x01, 23],
    );
    assert_wire(
        ContainerConfig {
            log_path: "l".into(),
            ..Default::default()
        },
        &[len_tag(11), 1, b'l'],
    );
    assert_wire(
        ContainerConfig {
            tty: true,
            ..Default::default()
        },
        &[varint_tag(14), 1],
    );
}

#[test]
fn container_security_context_fields() {
    assert_wire(
        LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 1 }),
            ..Default::default()
        },
        &[len_tag(12), 2, varint_tag(1), 1],
    );
    assert_wire(
        LinuxContainerSecurityContext {
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        },
        &[0x88, 0x01, 1],
    );
    assert_wire(
        LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile::default()),
            ..Default::default()
        },
        &[0x82, 0x01, 0],
    );
    assert_wire(
        LinuxContainerSecurityContext {
            no_new_privs: true,
            ..Default::default()
        },
        &[varint_tag(11), 1],
    );
    assert_wire(
        LinuxContainerSecurityContext {
            readonly_paths: vec!["r".into()],
            ..Default::default()
        },
        &[len_tag(14), 1, b'r'],
    );
    assert_wire(
        Capability {
            add_ambient_capabilities: vec!["c".into()],
            ..Default::default()
        },
        &[len_tag(3), 1, b'c'],
    );
}

#[test]
fn mount_and_image_spec_fields() {
    assert_wire(
        Mount {
            recursive_read_only: true,
            ..Default::default()
        },
        &[varint_tag(8), 1],
    );
    assert_wire(
        Mount {
            image: Some(ImageSpec::default()),
            image_sub_path: "s".into(),
            ..Default::default()
        },
        &[len_tag(9), 0, len_tag(10), 1, b's'],
    );
    assert_wire(
        Mount {
            uid_mappings: vec![IdMapping::default()],
            gid_mappings: vec![IdMapping::default()],
            ..Default::default()
        },
        &[len_tag(6), 0, len_tag(7), 0],
    );
    assert_wire(
        ImageSpec {
            user_specified_image: "u".into(),
            runtime_handler: "h".into(),
            image_ref: "r".into(),
            ..Default::default()
        },
        &[
            0x92, 0x01, 1, b'u', 0x9a, 0x01, 1, b'h', 0xa2, 0x01, 1, b'r',
        ],
    );
}

#[test]
fn container_status_fields() {
    assert_wire(
        ContainerStatus {
            reason: "r".into(),
            message: "m".into(),
            ..Default::default()
        },
        &[len_tag(10), 1, b'r', len_tag(11), 1, b'm'],
    );
    assert_wire(
        ContainerStatus {
            exit_code: 1,
            ..Default::default()
        },
        &[varint_tag(7), 1],
    );
    assert_wire(
        ContainerStatus {
            image_id: "i".into(),
            user: Some(ContainerUser::default()),
            stop_signal: Signal::Sigrtmax as i32,
            ..Default::default()
        },
        &[0x8a, 0x01, 1, b'i', 0x92, 0x01, 0, 0x98, 0x01, 65],
    );
}

#[test]
fn status_and_runtime_config_fields() {
    assert_wire(
        StatusResponse {
            features: Some(RuntimeFeatures {
                user_namespaces_host_network: true,
                ..Default::default()
            }),
            ..Default::default()
        },
        &[len_tag(4), 2, varint_tag(2), 1],
    );
    assert_wire(
        RuntimeHandler {
            features: Some(RuntimeHandlerFeatures {
                user_namespaces: true,
                ..Default::default()
            }),
            ..Default::default()
        },
        &[len_tag(2), 2, varint_tag(2), 1],
    );
    assert_wire(
        RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        },
        &[len_tag(1), 2, varint_tag(1), 1],
    );
    assert_wire(
        UpdatePodSandboxResourcesRequest {
            resources: Some(LinuxContainerResources::default()),
            ..Default::default()
        },
        &[len_tag(3), 0],
    );
}

#[test]
fn sandbox_status_exec_and_event_fields() {
    assert_wire(
        PodSandboxStatusResponse {
            timestamp: 5,
            ..Default::default()
        },
        &[varint_tag(4), 5],
    );
    assert_wire(
        PodSandboxStatus {
            runtime_handler: "h".into(),
            ..Default::default()
        },
        &[len_tag(9), 1, b'h'],
    );
    assert_wire(
        ExecRequest {
            audit_request_id: "a".into(),
            ..Default::default()
        },
        &[len_tag(7), 1, b'a'],
    );
    assert_wire(
        AttachRequest {
            audit_request_id: "a".into(),
            ..Default::default()
        },
        &[len_tag(6), 1, b'a'],
    );
    assert_wire(
        ContainerEventResponse {
            container_event_type: ContainerEventType::ContainerDeletedEvent as i32,
            containers_statuses: vec![ContainerStatus::default()],
            ..Default::default()
        },
        &[varint_tag(2), 3, len_tag(5), 0],
    );
}

#[test]
fn image_and_stats_fields() {
    assert_wire(
        Image {
            pinned: true,
            ..Default::default()
        },
        &[varint_tag(8), 1],
    );
    assert_wire(
        ImageFsInfoResponse {
            container_filesystems: vec![FilesystemUsage::default()],
            ..Default::default()
        },
        &[len_tag(2), 0],
    );
    // PsiData: Total varint 1, Avg10 double 2 (fixed64).
    assert_wire(
        PsiStats {
            some: Some(PsiData {
                avg10: 1.0,
                ..Default::default()
            }),
            ..Default::default()
        },
        &[len_tag(2), 9, 2 << 3 | 1, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f],
    );
    assert_wire(
        MemoryUsage {
            psi: Some(PsiStats::default()),
            ..Default::default()
        },
        &[len_tag(8), 0],
    );
    assert_wire(
        ContainerStats {
            io: Some(IoUsage::default()),
            ..Default::default()
        },
        &[len_tag(6), 0],
    );
    assert_wire(
        Metric {
            metric_type: MetricType::Gauge as i32,
            value: Some(UInt64Value { value: 9 }),
            ..Default::default()
        },
        &[varint_tag(3), 1, len_tag(5), 2, varint_tag(1), 9],
    );
    assert_wire(
        WindowsContainerResources {
            affinity_cpus: vec![WindowsCpuGroupAffinity {
                cpu_mask: 1,
                cpu_group: 2,
            }],
            ..Default::default()
        },
        &[len_tag(6), 4, varint_tag(1), 1, varint_tag(2), 2],
    );
}
