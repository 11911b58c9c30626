//! Image volumes (a CRI mount naming an image, KEP-4639): the pulled image
//! appears read-only, nosuid/nodev/noexec at the mount's container path,
//! or only its `image_sub_path`; an image that was not pulled fails
//! CreateContainer naming the mount. containerd 1.6 predates them: against
//! it these tests are skipped.

use berth_proto::runtime::v1::{ImageSpec, Mount, RemoveContainerRequest};
use berth_tests::cri::{self, EndpointKind};

fn image_mount(image: &str, container_path: &str, sub_path: &str) -> Mount {
    Mount {
        container_path: container_path.into(),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

/// Mount points in the daemon's mount namespace under an image-volumes dir.
fn image_volume_mounts(daemon_pid: u32) -> anyhow::Result<usize> {
    let mountinfo = std::fs::read_to_string(format!("/proc/{daemon_pid}/mountinfo"))?;
    Ok(mountinfo
        .lines()
        .filter(|l| l.contains("/image-volumes/"))
        .count())
}

#[test]
fn a_pulled_image_is_mounted_read_only_and_noexec() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        if env.kind() != EndpointKind::Berth {
            eprintln!("SKIP: the reference containerd (1.6) has no image volumes");
            return Ok(());
        }
        let busybox = env.images.busybox.clone();
        let mut config = env.container_config("vol", &["sleep", "3600"]);
        config.mounts = vec![
            image_mount(&busybox, "/image", ""),
            image_mount(&busybox, "/image-bin", "bin"),
        ];
        let (_, _, id) = env.pod_with_container("image-volume", config).await?;
        env.exec_ok(&id, &["test", "-f", "/image/bin/busybox"])
            .await?;
        env.exec_ok(&id, &["test", "-f", "/image-bin/busybox"])
            .await?;
        let mounts = env.exec_ok(&id, &["cat", "/proc/self/mounts"]).await?;
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some("/image"))
            .expect("the image volume is mounted");
        let options: Vec<&str> = line.split(' ').nth(3).unwrap_or("").split(',').collect();
        for option in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(options.contains(&option), "{option} missing: {line}");
        }
        let write = env.exec_sync(&id, &["touch", "/image/new"], 30).await?;
        assert_ne!(write.exit_code, 0, "the volume is read-only");
        let run = env
            .exec_sync(&id, &["sh", "-c", "/image-bin/busybox true"], 30)
            .await?;
        assert_ne!(run.exit_code, 0, "nothing in the volume runs");

        let daemon = env.daemon.pid();
        assert_eq!(image_volume_mounts(daemon)?, 2);
        env.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await?;
        assert_eq!(
            image_volume_mounts(daemon)?,
            0,
            "removal unmounts the volumes"
        );
        Ok(())
    })
}

#[test]
fn an_image_volume_of_an_unpulled_image_or_missing_sub_path_fails_create() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        if env.kind() != EndpointKind::Berth {
            eprintln!("SKIP: the reference containerd (1.6) has no image volumes");
            return Ok(());
        }
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        let pod_config = env.pod_config("image-volume-bad");
        let pod = env.run_pod(&pod_config).await?;
        // Pushed to the registry, never pulled.
        let unpulled = env.images.pause.clone();
        let mut config = env.container_config("unpulled", &["sleep", "3600"]);
        config.mounts = vec![image_mount(&unpulled, "/data", "")];
        let err = env
            .create_container(&pod, &pod_config, config)
            .await
            .expect_err("an unpulled image cannot be mounted");
        assert!(format!("{err:#}").contains("mounts[0].image"), "{err:#}");

        let mut config = env.container_config("nosub", &["sleep", "3600"]);
        config.mounts = vec![image_mount(&busybox, "/data", "no/such/dir")];
        let err = env
            .create_container(&pod, &pod_config, config)
            .await
            .expect_err("a missing sub path cannot be mounted");
        assert!(
            format!("{err:#}").contains("mounts[0].image_sub_path"),
            "{err:#}"
        );
        assert_eq!(
            image_volume_mounts(env.daemon.pid())?,
            0,
            "nothing is left mounted"
        );
        Ok(())
    })
}
