//! Security context: run as user/group, readonly rootfs, privileged,
//! capabilities add/drop, no new privs, seccomp RuntimeDefault/Unconfined.

use berth_proto::runtime::v1::{
    Capability, ContainerConfig, Int64Value, LinuxContainerSecurityContext, SecurityProfile,
    security_profile::ProfileType,
};
use berth_tests::cri::{self, CriEnv};

const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

fn security(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
}

/// Starts a `sleep` container named `name` with the security context `secure`
/// sets, alone in a pod named `pod`; returns the container id.
async fn secured_sleeper(
    env: &mut CriEnv,
    pod: &str,
    name: &str,
    secure: impl FnOnce(&mut LinuxContainerSecurityContext),
) -> anyhow::Result<String> {
    let mut config = env.container_config(name, &["sleep", "3600"]);
    secure(security(&mut config));
    let (_, _, id) = env.pod_with_container(pod, config).await?;
    Ok(id)
}

fn capabilities(add: &str, drop: &str) -> Option<Capability> {
    Some(Capability {
        add_capabilities: vec![add.into()],
        drop_capabilities: vec![drop.into()],
        add_ambient_capabilities: vec![],
    })
}

fn seccomp(profile_type: ProfileType) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: String::new(),
    })
}

/// The value of a `/proc/self/status` field inside the container.
async fn proc_status(env: &mut CriEnv, id: &str, field: &str) -> anyhow::Result<String> {
    let status = env.exec_ok(id, &["cat", "/proc/self/status"]).await?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("no {field} in {status}"))
}

async fn effective_caps(env: &mut CriEnv, id: &str) -> anyhow::Result<u64> {
    Ok(u64::from_str_radix(
        &proc_status(env, id, "CapEff").await?,
        16,
    )?)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

#[test]
fn run_as_user_and_group() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let id = secured_sleeper(&mut env, "run-as", "user", |security| {
            security.run_as_user = Some(Int64Value { value: 1234 });
            security.run_as_group = Some(Int64Value { value: 5678 });
            security.supplemental_groups = vec![4000];
        })
        .await?;
        assert_eq!(env.exec_ok(&id, &["id", "-u"]).await?.trim(), "1234");
        assert_eq!(env.exec_ok(&id, &["id", "-g"]).await?.trim(), "5678");
        let groups = env.exec_ok(&id, &["id", "-G"]).await?;
        assert!(groups.split_whitespace().any(|g| g == "4000"), "{groups}");
        let status = env.container_status(&id).await?;
        if let Some(user) = status.user.and_then(|u| u.linux) {
            assert_eq!((user.uid, user.gid), (1234, 5678));
        }
        Ok(())
    })
}

#[test]
fn run_as_username_from_the_image_passwd() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let id = secured_sleeper(&mut env, "run-as-name", "username", |security| {
            security.run_as_username = "nobody".into();
        })
        .await?;
        assert_eq!(env.exec_ok(&id, &["id", "-u"]).await?.trim(), "65534");
        Ok(())
    })
}

#[test]
fn readonly_rootfs_refuses_writes_but_keeps_volumes_writable() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let id = secured_sleeper(&mut env, "readonly", "ro", |security| {
            security.readonly_rootfs = true;
        })
        .await?;
        let write = env.exec_sync(&id, &["touch", "/new-file"], 30).await?;
        assert_ne!(write.exit_code, 0, "write to a readonly rootfs succeeded");
        assert!(
            String::from_utf8_lossy(&write.stderr).contains("Read-only"),
            "{write:?}"
        );
        Ok(())
    })
}

#[test]
fn privileged_container_has_admin_capabilities() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        let mut pod_config = env.pod_config("privileged");
        pod_config
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .privileged = true;
        let pod = env.run_pod(&pod_config).await?;
        let mut config = env.container_config("privileged", &["sleep", "3600"]);
        security(&mut config).privileged = true;
        let id = env.create_container(&pod, &pod_config, config).await?;
        env.start_container(&id).await?;
        let caps = effective_caps(&mut env, &id).await?;
        assert!(
            has(caps, CAP_SYS_ADMIN) && has(caps, CAP_NET_ADMIN),
            "{caps:x}"
        );
        // Privileged containers may configure their pod's network. (containerd
        // 1.6 still mounts /sys read-only outside the host network.)
        env.exec_ok(&id, &["ip", "link", "set", "lo", "mtu", "1400"])
            .await?;
        Ok(())
    })
}

#[test]
fn default_container_lacks_admin_capabilities_and_sys_is_readonly() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let config = env.container_config("default-caps", &["sleep", "3600"]);
        let (_, _, id) = env.pod_with_container("default-caps", config).await?;
        let caps = effective_caps(&mut env, &id).await?;
        assert!(has(caps, CAP_CHOWN), "{caps:x}");
        assert!(
            !has(caps, CAP_SYS_ADMIN) && !has(caps, CAP_NET_ADMIN),
            "{caps:x}"
        );
        let link = env
            .exec_sync(&id, &["ip", "link", "set", "lo", "mtu", "1400"], 30)
            .await?;
        assert_ne!(
            link.exit_code, 0,
            "unprivileged container configured a link"
        );
        assert!(
            String::from_utf8_lossy(&link.stderr).contains("not permitted"),
            "{link:?}"
        );
        let mounts = env.exec_ok(&id, &["cat", "/proc/mounts"]).await?;
        let sys = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some("/sys"))
            .expect("/sys mounted");
        assert!(
            sys.split(' ').nth(3).unwrap().split(',').any(|o| o == "ro"),
            "{sys}"
        );
        Ok(())
    })
}

#[test]
fn capabilities_are_added_and_dropped() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let id = secured_sleeper(&mut env, "caps", "caps", |security| {
            security.capabilities = capabilities("NET_ADMIN", "CHOWN");
        })
        .await?;
        let caps = effective_caps(&mut env, &id).await?;
        assert!(has(caps, CAP_NET_ADMIN), "NET_ADMIN added: {caps:x}");
        assert!(!has(caps, CAP_CHOWN), "CHOWN dropped: {caps:x}");
        let chown = env.exec_sync(&id, &["chown", "1:1", "/tmp"], 30).await?;
        assert_ne!(chown.exit_code, 0, "chown without CAP_CHOWN succeeded");
        Ok(())
    })
}

#[test]
fn drop_all_then_add_one() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let id = secured_sleeper(&mut env, "drop-all", "drop-all", |security| {
            security.capabilities = capabilities("CHOWN", "ALL");
        })
        .await?;
        assert_eq!(effective_caps(&mut env, &id).await?, 1 << CAP_CHOWN);
        Ok(())
    })
}

#[test]
fn no_new_privs_is_set_when_asked() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let id = secured_sleeper(&mut env, "nnp", "nnp", |security| {
            security.no_new_privs = true;
        })
        .await?;
        assert_eq!(proc_status(&mut env, &id, "NoNewPrivs").await?, "1");
        let other = secured_sleeper(&mut env, "privs", "privs", |_| {}).await?;
        assert_eq!(proc_status(&mut env, &other, "NoNewPrivs").await?, "0");
        Ok(())
    })
}

#[test]
fn seccomp_runtime_default_filters_and_unconfined_does_not() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let filtered = secured_sleeper(&mut env, "seccomp-default", "default", |security| {
            security.seccomp = seccomp(ProfileType::RuntimeDefault);
        })
        .await?;
        assert_eq!(proc_status(&mut env, &filtered, "Seccomp").await?, "2");
        // `Seccomp: 2` is filter mode: a profile is loaded.
        let unconfined =
            secured_sleeper(&mut env, "seccomp-unconfined", "unconfined", |security| {
                security.seccomp = seccomp(ProfileType::Unconfined);
            })
            .await?;
        assert_eq!(proc_status(&mut env, &unconfined, "Seccomp").await?, "0");
        Ok(())
    })
}
