//! CDI devices (CreateContainer's `CDI_devices` and `cdi.k8s.io/`
//! annotations) resolved in the spec dirs berth-cri is given: the container
//! sees the device node under its CDI path, the env and the mount the spec
//! adds, and the spec's hook runs; an unknown device fails CreateContainer
//! by name and leaves nothing.
//! containerd 1.6 has no CDI: against it these tests are skipped.

use berth_proto::runtime::v1::CdiDevice;
use berth_tests::cri::{self, CriEnv, EndpointKind};

/// A spec exposing /dev/null as /dev/cdi-null, with an env var, a
/// read-only mount of `data_dir` at /run/cdi-data and a poststart hook
/// that appends a line to `data_dir/hook-ran`.
fn write_spec(spec_dir: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(spec_dir)?;
    std::fs::write(
        spec_dir.join("berth-test.yaml"),
        format!(
            r#"cdiVersion: "0.6.0"
kind: berth.test/dev
containerEdits:
  env: ["CDI_SPEC=berth-test"]
devices:
  - name: null0
    containerEdits:
      env: ["CDI_DEVICE=null0"]
      deviceNodes:
        - path: /dev/cdi-null
          hostPath: /dev/null
      mounts:
        - hostPath: {data}
          containerPath: /run/cdi-data
          options: [ro, rbind, nosuid, nodev]
      hooks:
        - hookName: poststart
          path: /bin/sh
          args: ["sh", "-c", "echo ran >> {data}/hook-ran"]
"#,
            data = data_dir.display()
        ),
    )?;
    Ok(())
}

fn skip(env: &CriEnv) -> bool {
    if env.kind() != EndpointKind::Berth {
        eprintln!("SKIP: the reference containerd (1.6) has no CDI");
        return true;
    }
    false
}

async fn check_device_env_and_mount(env: &mut CriEnv, id: &str) -> anyhow::Result<()> {
    let environ = env
        .exec_ok(id, &["sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"])
        .await?;
    assert!(
        environ.lines().any(|l| l == "CDI_DEVICE=null0"),
        "{environ}"
    );
    assert!(
        environ.lines().any(|l| l == "CDI_SPEC=berth-test"),
        "{environ}"
    );
    let data = env.exec_ok(id, &["cat", "/run/cdi-data/hello"]).await?;
    assert_eq!(data, "from the CDI spec\n");
    // A char device the cgroup lets the container write to.
    env.exec_ok(
        id,
        &[
            "sh",
            "-c",
            "test -c /dev/cdi-null && echo x > /dev/cdi-null",
        ],
    )
    .await?;
    let denied = env
        .exec_sync(id, &["sh", "-c", "touch /run/cdi-data/new"], 30)
        .await?;
    assert_ne!(denied.exit_code, 0, "the CDI mount is read-only");
    Ok(())
}

#[test]
fn cdi_devices_bring_their_nodes_env_and_mounts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (spec_dir, data_dir) = (dir.path().join("cdi"), dir.path().join("data"));
    std::fs::create_dir_all(&data_dir)?;
    std::fs::write(data_dir.join("hello"), "from the CDI spec\n")?;
    write_spec(&spec_dir, &data_dir)?;
    let spec_dir_flag = spec_dir.display().to_string();
    let flags = ["--cdi-spec-dir", spec_dir_flag.as_str()];
    cri::run_with_flags(&flags, |mut env| async move {
        if skip(&env) {
            return Ok(());
        }
        let mut config = env.container_config("cdi-field", &["sleep", "3600"]);
        config.cdi_devices = vec![CdiDevice {
            name: "berth.test/dev=null0".into(),
        }];
        let (pod, pod_config, id) = env.pod_with_container("cdi", config).await?;
        check_device_env_and_mount(&mut env, &id).await?;
        // Poststart hooks run before the start operation returns.
        let hook_log = data_dir.join("hook-ran");
        assert_eq!(std::fs::read_to_string(&hook_log)?, "ran\n");

        // The same device asked for through a kubelet device-plugin annotation.
        let mut config = env.container_config("cdi-annotation", &["sleep", "3600"]);
        config.annotations.insert(
            "cdi.k8s.io/berth-test_null0".into(),
            "berth.test/dev=null0".into(),
        );
        let id = env.create_container(&pod, &pod_config, config).await?;
        env.start_container(&id).await?;
        check_device_env_and_mount(&mut env, &id).await?;
        assert_eq!(std::fs::read_to_string(&hook_log)?, "ran\nran\n");
        Ok(())
    })
}

#[test]
fn an_unknown_cdi_device_fails_create_by_name_and_leaves_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    write_spec(&dir.path().join("cdi"), &data_dir)?;
    let spec_dir_flag = dir.path().join("cdi").display().to_string();
    let flags = ["--cdi-spec-dir", spec_dir_flag.as_str()];
    cri::run_with_flags(&flags, |mut env| async move {
        if skip(&env) {
            return Ok(());
        }
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        let pod_config = env.pod_config("cdi-missing");
        let pod = env.run_pod(&pod_config).await?;
        for (name, device) in [
            ("unknown", "berth.test/dev=missing"),
            ("unqualified", "null0"),
        ] {
            let mut config = env.container_config(name, &["sleep", "3600"]);
            config.cdi_devices = vec![CdiDevice {
                name: device.into(),
            }];
            let err = env
                .create_container(&pod, &pod_config, config)
                .await
                .expect_err("an unresolvable device fails CreateContainer");
            assert!(format!("{err:#}").contains(device), "{err:#}");
        }
        let left = env.pod_containers(&pod).await?;
        assert!(left.is_empty(), "{left:?}");
        // The name is free again: a good request with it succeeds.
        let mut config = env.container_config("unknown", &["sleep", "3600"]);
        config.cdi_devices = vec![CdiDevice {
            name: "berth.test/dev=null0".into(),
        }];
        env.create_container(&pod, &pod_config, config).await?;
        Ok(())
    })
}
