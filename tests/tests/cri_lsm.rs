//! AppArmor and SELinux settings of a container as containerd decides them
//! on a host where the LSM is off (as on the test machines: no AppArmor
//! module, no selinuxfs, and containerd's `enable_selinux = false`):
//! Unconfined runs, any AppArmor profile is refused, SELinux options are
//! checked and otherwise leave the spec without labels, `selinux_relabel`
//! mounts work unchanged. Where the host has AppArmor the default profile
//! confines the container instead.

use berth_proto::runtime::v1::{
    ContainerConfig, ContainerStatusRequest, Mount, SeLinuxOption, SecurityProfile,
    security_profile::ProfileType,
};
use berth_tests::cri::{self, CriEnv, EndpointKind};

fn host_has_apparmor() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.starts_with('Y'))
}

fn with_apparmor(mut config: ContainerConfig, kind: ProfileType, name: &str) -> ContainerConfig {
    let security = config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default);
    security.apparmor = Some(SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: name.into(),
    });
    config
}

#[allow(deprecated)]
fn with_legacy_apparmor(mut config: ContainerConfig, value: &str) -> ContainerConfig {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .apparmor_profile = value.into();
    config
}

/// The OCI spec the runtime was given for container `id`.
async fn oci_spec(env: &mut CriEnv, id: &str) -> anyhow::Result<serde_json::Value> {
    let info = env
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"])?;
    if let Some(spec) = info.get("runtimeSpec") {
        return Ok(spec.clone());
    }
    let bundle = info["bundle"].as_str().expect("bundle in the verbose info");
    Ok(serde_json::from_slice(&std::fs::read(
        std::path::Path::new(bundle).join("config.json"),
    )?)?)
}

async fn containers_of(env: &mut CriEnv, pod: &str) -> anyhow::Result<Vec<String>> {
    let containers = env.pod_containers(pod).await?;
    Ok(containers.into_iter().map(|c| c.id).collect())
}

#[test]
fn apparmor_profiles_as_containerd_decides_them() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        let pod_config = env.pod_config("apparmor");
        let pod = env.run_pod(&pod_config).await?;

        let base = |name: &str| env.container_config(name, &["sleep", "3600"]);
        let unconfined = [
            with_apparmor(base("unconfined"), ProfileType::Unconfined, ""),
            with_legacy_apparmor(base("legacy-unconfined"), "unconfined"),
        ];
        let default = with_apparmor(base("runtime-default"), ProfileType::RuntimeDefault, "");
        let localhost = with_apparmor(base("localhost"), ProfileType::Localhost, "no-such");
        let legacy_bad = with_legacy_apparmor(base("legacy-bad"), "no-prefix");

        for config in unconfined {
            let id = env.create_container(&pod, &pod_config, config).await?;
            env.start_container(&id).await?;
            let spec = oci_spec(&mut env, &id).await?;
            assert!(spec["process"].get("apparmorProfile").is_none(), "{spec}");
        }
        let err = env
            .create_container(&pod, &pod_config, legacy_bad)
            .await
            .expect_err("a profile without localhost/ is invalid");
        assert!(format!("{err:#}").contains("invalid profile"), "{err:#}");
        let err = env
            .create_container(&pod, &pod_config, localhost)
            .await
            .expect_err("an unknown or unsupported localhost profile");
        assert!(
            format!("{err:#}").to_lowercase().contains("apparmor"),
            "{err:#}"
        );

        if host_has_apparmor() {
            let id = env.create_container(&pod, &pod_config, default).await?;
            env.start_container(&id).await?;
            let current = env
                .exec_ok(&id, &["cat", "/proc/self/attr/current"])
                .await?;
            assert!(!current.starts_with("unconfined"), "{current}");
        } else {
            let err = env
                .create_container(&pod, &pod_config, default)
                .await
                .expect_err("no AppArmor, no runtime default profile");
            let message = format!("{err:#}").to_lowercase();
            assert!(
                message.contains("apparmor") && message.contains("not supported"),
                "{message}"
            );
        }
        let expected = if host_has_apparmor() { 3 } else { 2 };
        assert_eq!(containers_of(&mut env, &pod).await?.len(), expected);
        Ok(())
    })
}

#[test]
fn selinux_options_without_selinux_leave_no_labels() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let shared = env.dir().join("relabelled");
        std::fs::create_dir_all(&shared)?;
        std::fs::write(shared.join("file"), "data\n")?;
        let options = |level: &str| SeLinuxOption {
            user: "system_u".into(),
            role: "system_r".into(),
            r#type: "spc_t".into(),
            level: level.into(),
        };
        let mut config = env.container_config("labelled", &["sleep", "3600"]);
        let security = config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default);
        security.selinux_options = Some(options("s0:c1,c2"));
        config.mounts = vec![Mount {
            container_path: "/shared".into(),
            host_path: shared.display().to_string(),
            selinux_relabel: true,
            ..Default::default()
        }];
        let (pod, pod_config, id) = env.pod_with_container("selinux", config).await?;
        assert_eq!(env.exec_ok(&id, &["cat", "/shared/file"]).await?, "data\n");
        let spec = oci_spec(&mut env, &id).await?;
        assert!(spec["process"].get("selinuxLabel").is_none(), "{spec}");
        assert!(spec["linux"].get("mountLabel").is_none(), "{spec}");

        let mut bad = env.container_config("badlevel", &["sleep", "3600"]);
        bad.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .selinux_options = Some(options("s0:bad"));
        let err = env
            .create_container(&pod, &pod_config, bad)
            .await
            .expect_err("a malformed level is refused");
        let message = format!("{err:#}");
        assert!(
            message.contains("s0:bad") && message.contains("not correct"),
            "{message}"
        );
        assert_eq!(containers_of(&mut env, &pod).await?, [id]);
        if env.kind() == EndpointKind::Berth {
            // Nothing was relabelled: the LSM is off.
            assert!(xattr_absent(&shared)?);
        }
        Ok(())
    })
}

/// The path has no security.selinux attribute.
fn xattr_absent(path: &std::path::Path) -> anyhow::Result<bool> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: valid NUL-terminated strings; a zero-length query.
    let size = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c"security.selinux".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    Ok(size < 0)
}
