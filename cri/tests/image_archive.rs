//! Image archives: export as OCI layout + docker-archive in one tar, import of both.

mod image_common;

use std::process::Command;

use berth_tests::registry::{
    ImageBuilder, LayerBuilder, LayerCompression, RegistryOptions, busybox_layer, sha256_digest,
};
use image_common::{Env, pull_anonymously};

#[tokio::test]
async fn export_then_import_into_a_fresh_store_round_trips() {
    let env = Env::start(RegistryOptions::default());
    let image = ImageBuilder::new()
        .layer(busybox_layer().build(LayerCompression::Gzip))
        .layer(
            LayerBuilder::new()
                .file("etc/motd", "hello", 0o644)
                .build(LayerCompression::Zstd),
        )
        .build();
    let reference = env.push("test/export", "v1", &image).await;
    let store = env.store();
    let pulled = pull_anonymously(&store, &reference).await.unwrap();

    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("image.tar");
    store
        .export(&[&reference], std::fs::File::create(&tar_path).unwrap())
        .unwrap();

    // Upstream tooling reads it both ways.
    for transport in ["oci-archive", "docker-archive"] {
        let inspect = Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                &format!("{transport}:{}", tar_path.display()),
            ])
            .output()
            .unwrap();
        assert!(
            inspect.status.success(),
            "skopeo {transport}: {}",
            String::from_utf8_lossy(&inspect.stderr)
        );
    }

    let fresh_root = tempfile::tempdir().unwrap();
    let fresh = env.store_at(fresh_root.path());
    let imported = fresh.import(&tar_path, None).await.unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].id, pulled.id);
    assert_eq!(imported[0].repo_tags, vec![reference.clone()]);
    let dirs = fresh.layer_dirs(&imported[0]).unwrap();
    assert_eq!(
        std::fs::read_to_string(dirs[1].join("etc/motd")).unwrap(),
        "hello"
    );
    assert!(fresh.status(&reference).is_some());
}

#[tokio::test]
async fn docker_save_archive_imports_with_its_tags() {
    let env = Env::start(RegistryOptions::default());
    let base = busybox_layer().tar();
    let top = LayerBuilder::new().file("top", "t", 0o644).tar();
    let diff_ids = [sha256_digest(&base), sha256_digest(&top)];
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_hex = sha256_digest(&config)
        .trim_start_matches("sha256:")
        .to_string();
    let config_name = format!("{config_hex}.json");
    // docker save's layout: <id>/layer.tar, <config>.json, manifest.json; a repeated
    // layer appears as a symlink to the first copy.
    let saved = |layers: &[&str]| {
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": config_name, "RepoTags": ["busybox:saved"], "Layers": layers,
        }]))
        .unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("aaa/layer.tar", &base[..]),
            ("bbb/layer.tar", &top[..]),
            (config_name.as_str(), &config[..]),
            ("manifest.json", &manifest[..]),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            builder.append_data(&mut h, name, data).unwrap();
        }
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "ccc/layer.tar", "../bbb/layer.tar")
            .unwrap();
        builder.into_inner().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saved.tar");
    let store = env.store();

    // Three layers against a config with two diff ids: refused, nothing recorded.
    std::fs::write(
        &path,
        saved(&["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"]),
    )
    .unwrap();
    let err = store.import(&path, None).await.unwrap_err();
    assert!(
        err.to_string().contains("3 layers but the config lists 2"),
        "{err}"
    );
    assert!(store.list().is_empty());

    // The top layer reached through the symlink.
    std::fs::write(&path, saved(&["aaa/layer.tar", "ccc/layer.tar"])).unwrap();
    let imported = store.import(&path, None).await.unwrap();
    assert_eq!(
        imported[0].repo_tags,
        vec!["docker.io/library/busybox:saved".to_string()]
    );
    assert_eq!(imported[0].id.hex(), config_hex);
    let dirs = store.layer_dirs(&imported[0]).unwrap();
    assert!(dirs[0].join("bin/busybox").is_file());
    assert!(dirs[1].join("top").is_file());
    assert!(store.status("busybox:saved").is_some());
}

#[tokio::test]
async fn multi_platform_oci_archive_made_by_skopeo_imports_this_platform() {
    let env = Env::start(RegistryOptions::default());
    let build = |arch: &str| {
        ImageBuilder::new()
            .layer(
                LayerBuilder::new()
                    .file("arch", arch, 0o644)
                    .build(LayerCompression::Gzip),
            )
            .platform("linux", arch)
            .build()
    };
    let (amd64, arm64) = (build("amd64"), build("arm64"));
    env.registry
        .pusher()
        .unwrap()
        .push_index("test/multi", "v1", &[arm64, amd64.clone()], false)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let archive = dir.path().join("multi.tar");
    let copy = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}", env.reference("test/multi:v1")))
        .arg(format!(
            "oci-archive:{}:example.com/test/multi:v1",
            archive.display()
        ))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copy.stderr)
    );

    let store = env.store();
    let imported = store.import(&archive, None).await.unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].id.as_str(), amd64.config.digest);
    assert_eq!(
        imported[0].repo_tags,
        vec!["example.com/test/multi:v1".to_string()]
    );
    let dirs = store.layer_dirs(&imported[0]).unwrap();
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("arch")).unwrap(),
        "amd64"
    );
}
