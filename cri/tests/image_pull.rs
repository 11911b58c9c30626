//! Pulls from a real registry (Debian's docker-registry on loopback).

mod image_common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use berth_cri::image::{Credentials, ImageError, Platform};
use berth_tests::registry::{
    ImageBuilder, LayerBuilder, LayerCompression, RegistryOptions, busybox_layer,
};
use image_common::{
    Env, assert_registry_status, in_private_mount_ns, list_dir, one_file_image, pull_anonymously,
    xattr,
};

fn whiteout_image() -> berth_tests::registry::BuiltImage {
    let base = busybox_layer()
        .dir("data", 0o755)
        .file("data/keep", "keep", 0o644)
        .file("data/gone", "gone", 0o644)
        .dir("cache", 0o755)
        .file("cache/old", "old", 0o644)
        .build(LayerCompression::Gzip);
    let middle = LayerBuilder::new()
        .whiteout("data/gone")
        .dir("cache", 0o755)
        .opaque("cache")
        .file("cache/new", "new", 0o644)
        .build(LayerCompression::None);
    let top = LayerBuilder::new()
        .file("data/zstd", "from a zstd layer", 0o600)
        .build(LayerCompression::Zstd);
    ImageBuilder::new()
        .layer(base)
        .layer(middle)
        .layer(top)
        .build()
}

#[tokio::test]
async fn multi_layer_pull_unpacks_whiteouts_and_mounts_as_overlay() {
    let env = Env::start(RegistryOptions::default());
    let image = whiteout_image();
    env.push("test/whiteouts", "v1", &image).await;
    let store = env.store();
    let record = pull_anonymously(&store, &env.reference("test/whiteouts:v1"))
        .await
        .unwrap();
    assert_eq!(record.id.as_str(), image.config.digest);
    assert_eq!(record.repo_tags, vec![env.reference("test/whiteouts:v1")]);
    assert_eq!(
        record.repo_digests,
        vec![format!(
            "{}@{}",
            env.reference("test/whiteouts"),
            image.manifest.digest
        )]
    );
    assert_eq!(record.diff_ids.len(), 3);
    let dirs = store.layer_dirs(&record).unwrap();
    let whiteout = std::fs::symlink_metadata(dirs[1].join("data/gone")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    let opaque = xattr(&dirs[1].join("cache"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert_eq!(
        std::fs::read_link(dirs[0].join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );

    let snapshotter = berth_cri::image::Snapshotter::new(store.clone()).unwrap();
    let snap = snapshotter
        .prepare("ctr-whiteouts", record.id.as_str(), false)
        .unwrap();
    let target = tempfile::tempdir().unwrap();
    let merged = in_private_mount_ns(|| {
        snap.mount.mount_at(target.path()).unwrap();
        let view = (
            list_dir(&target.path().join("data")),
            list_dir(&target.path().join("cache")),
            std::fs::read_to_string(target.path().join("data/zstd")).unwrap(),
        );
        std::fs::write(target.path().join("data/written"), "by the container").unwrap();
        nix::mount::umount(target.path()).unwrap();
        view
    });
    assert_eq!(merged.0, vec!["keep", "zstd"]);
    assert_eq!(merged.1, vec!["new"]);
    assert_eq!(merged.2, "from a zstd layer");
    let upper = store
        .root()
        .join("snapshots/ctr-whiteouts/upper/data/written");
    assert_eq!(std::fs::read_to_string(upper).unwrap(), "by the container");
    // Nothing stayed mounted on the host.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&target.path().display().to_string()));

    // In use: removal refused until the snapshot goes.
    let err = store.remove(record.id.as_str()).unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err}");
    snapshotter.remove("ctr-whiteouts").unwrap();
    store.remove(&env.reference("test/whiteouts:v1")).unwrap();
    assert!(store.list().is_empty());
    let gc = store.gc().await.unwrap();
    assert_eq!(gc.layers_removed, 3);
    assert_eq!(list_dir(&store.root().join("layers")), Vec::<String>::new());
    assert_eq!(
        list_dir(&store.root().join("blobs/sha256")),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn second_pull_of_present_layers_downloads_nothing_and_concurrent_pulls_share_one() {
    let env = Env::start(RegistryOptions::default());
    let image = ImageBuilder::new()
        .layer(busybox_layer().build(LayerCompression::Gzip))
        .layer(
            LayerBuilder::new()
                .file("a", "a", 0o644)
                .build(LayerCompression::Gzip),
        )
        .build();
    let reference = env.push("test/shared", "v1", &image).await;
    let store = env.store();
    let anonymous = Credentials::anonymous();
    let (a, b) = tokio::join!(
        store.pull(&reference, &anonymous, None),
        store.pull(&reference, &anonymous, None)
    );
    let record = a.unwrap();
    assert_eq!(record, b.unwrap());
    let usage = store.fs_usage().unwrap();
    let busybox_size = std::fs::metadata("/bin/busybox").unwrap().len();
    assert!(usage.used_bytes > busybox_size + record.size, "{usage:?}");
    let applets = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap()
        .stdout;
    let applets = applets.iter().filter(|b| **b == b'\n').count() as u64;
    assert!(
        usage.inodes_used > applets,
        "applet links are counted: {usage:?}"
    );
    for layer in &image.layers {
        let get = format!("GET /v2/test/shared/blobs/{}", layer.digest);
        assert_eq!(env.registry.count_requests(&get), 1, "{get}");
    }
    // Record gone, layers kept: a new pull fetches manifest and config only.
    store.remove(&reference).unwrap();
    // A store reopened from disk (a daemon restart) sees the same layers.
    drop(store);
    let store = env.store();
    pull_anonymously(&store, &reference).await.unwrap();
    for layer in &image.layers {
        let get = format!("GET /v2/test/shared/blobs/{}", layer.digest);
        assert_eq!(env.registry.count_requests(&get), 1, "{get}");
    }
}

#[tokio::test]
async fn index_resolves_to_the_requested_platform() {
    let env = Env::start(RegistryOptions::default());
    let amd64 = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("arch", "amd64", 0o644)
                .build(LayerCompression::Gzip),
        )
        .platform("linux", "amd64")
        .build();
    let arm64 = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("arch", "arm64", 0o644)
                .build(LayerCompression::Gzip),
        )
        .platform("linux", "arm64")
        .build();
    let pusher = env.registry.pusher().unwrap();
    let index = pusher
        .push_index("test/multi", "v1", &[arm64.clone(), amd64.clone()], false)
        .await
        .unwrap();
    let docker_list = pusher
        .push_index(
            "test/multi",
            "docker",
            &[arm64.clone(), amd64.clone()],
            true,
        )
        .await
        .unwrap();
    let store = env.store();
    let host = pull_anonymously(&store, &env.reference("test/multi:v1"))
        .await
        .unwrap();
    assert_eq!(host.id.as_str(), amd64.config.digest);
    assert_eq!(host.target.digest, index.digest);
    assert_eq!(host.manifest.digest, amd64.manifest.digest);
    let arm = Platform {
        architecture: "arm64".into(),
        os: "linux".into(),
        variant: None,
    };
    let other = store
        .pull(
            &env.reference("test/multi:v1"),
            &Credentials::anonymous(),
            Some(&arm),
        )
        .await
        .unwrap();
    assert_eq!(other.id.as_str(), arm64.config.digest);
    let dir = &store.layer_dirs(&other).unwrap()[0];
    assert_eq!(std::fs::read_to_string(dir.join("arch")).unwrap(), "arm64");
    let listed = pull_anonymously(&store, &env.reference("test/multi:docker"))
        .await
        .unwrap();
    assert_eq!(listed.target.digest, docker_list.digest);
    let s390 = Platform {
        architecture: "s390x".into(),
        os: "linux".into(),
        variant: None,
    };
    let err = store
        .pull(
            &env.reference("test/multi:v1"),
            &Credentials::anonymous(),
            Some(&s390),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("linux/s390x") && err.to_string().contains("linux/arm64"),
        "{err}"
    );
}

#[tokio::test]
async fn docker_schema2_with_gzip_and_plain_layers() {
    let env = Env::start(RegistryOptions::default());
    let image = ImageBuilder::new()
        .layer(busybox_layer().build(LayerCompression::Gzip))
        .layer(
            LayerBuilder::new()
                .file("plain", "x", 0o644)
                .build(LayerCompression::None),
        )
        .docker_media_types()
        .build();
    env.push("test/docker", "v1", &image).await;
    let store = env.store();
    let record = pull_anonymously(&store, &env.reference("test/docker:v1"))
        .await
        .unwrap();
    assert_eq!(
        record.manifest.media_type,
        berth_tests::registry::DOCKER_MANIFEST
    );
    assert!(
        store.layer_dirs(&record).unwrap()[1]
            .join("plain")
            .is_file()
    );
    let config = store.config(&record).unwrap();
    assert_eq!(
        config.config().as_ref().unwrap().cmd().as_ref().unwrap(),
        &vec!["/bin/sh".to_string()]
    );
}

#[tokio::test]
async fn basic_auth_registry_needs_the_pull_secret() {
    let env = Env::start(RegistryOptions {
        basic_auth: Some(("puller".into(), "s3cret".into())),
        ..Default::default()
    });
    let image = one_file_image("secret", "x");
    let reference = env.push("test/private", "v1", &image).await;
    let store = env.store();
    let err = pull_anonymously(&store, &reference).await.unwrap_err();
    assert_registry_status(&err, 401);
    assert!(err.to_string().contains("test/private"), "{err}");
    let wrong = store
        .pull(&reference, &Credentials::basic("puller", "nope"), None)
        .await
        .unwrap_err();
    assert_registry_status(&wrong, 401);
    store
        .pull(&reference, &Credentials::basic("puller", "s3cret"), None)
        .await
        .unwrap();
    // The docker config.json form: base64 of user:password.
    store.remove(&reference).unwrap();
    let auth = Credentials {
        auth: "cHVsbGVyOnMzY3JldA==".into(),
        ..Default::default()
    };
    store.pull(&reference, &auth, None).await.unwrap();
}

#[tokio::test]
async fn tls_registry_with_custom_ca_from_hosts_toml() {
    let env = Env::start(RegistryOptions {
        tls: true,
        ..Default::default()
    });
    let image = one_file_image("tls", "x");
    env.push("test/tls", "v1", &image).await;
    let store = env.store();
    pull_anonymously(&store, &env.reference("test/tls:v1"))
        .await
        .unwrap();
    // Without the CA the same registry is refused.
    let no_ca = tempfile::tempdir().unwrap();
    let host_dir = no_ca.path().join(env.registry.host());
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!("server = \"{}\"\n", env.registry.url()),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let untrusting = berth_cri::image::ImageStore::open(
        root.path(),
        berth_cri::image::StoreOptions {
            hosts_dir: Some(no_ca.path().into()),
            ..Default::default()
        },
    )
    .unwrap();
    let err = pull_anonymously(&untrusting, &env.reference("test/tls:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Tls { .. }), "{err}");
}

#[tokio::test]
async fn override_path_mirror_serves_registry_k8s_io_images() {
    let env = Env::start(RegistryOptions::default());
    let image = ImageBuilder::new()
        .layer(busybox_layer().build(LayerCompression::Gzip))
        .build();
    env.push("registry.k8s.io/pause", "3.9", &image).await;
    let hosts = env.hosts.path().join("registry.k8s.io");
    std::fs::create_dir_all(&hosts).unwrap();
    // The upstream server is a closed loopback port: only the mirror can serve.
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"http://127.0.0.1:1\"\n[host.\"http://{}/v2/registry.k8s.io\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
            env.registry.host()
        ),
    )
    .unwrap();
    let store = env.store();
    let record = pull_anonymously(&store, "registry.k8s.io/pause:3.9")
        .await
        .unwrap();
    assert_eq!(
        record.repo_tags,
        vec!["registry.k8s.io/pause:3.9".to_string()]
    );
    assert!(store.status("registry.k8s.io/pause:3.9").is_some());
}

#[tokio::test]
async fn token_auth_registry_gets_a_bearer_token_with_the_pull_secret() {
    let env = Env::start(RegistryOptions {
        token_auth: Some(("tokenuser".into(), "t0ken".into())),
        ..Default::default()
    });
    let image = one_file_image("bearer", "x");
    let reference = env.push("test/bearer", "v1", &image).await;
    let store = env.store();
    let err = pull_anonymously(&store, &reference).await.unwrap_err();
    assert_registry_status(&err, 401);
    let record = store
        .pull(&reference, &Credentials::basic("tokenuser", "t0ken"), None)
        .await
        .unwrap();
    assert_eq!(record.id.as_str(), image.config.digest);
    assert!(
        store.layer_dirs(&record).unwrap()[0]
            .join("bearer")
            .is_file()
    );
}

#[tokio::test]
async fn pull_by_digest_and_by_tag_name_one_image() {
    let env = Env::start(RegistryOptions::default());
    let image = one_file_image("d", "d");
    env.push("test/digest", "v1", &image).await;
    let store = env.store();
    let by_digest = format!("{}@{}", env.reference("test/digest"), image.manifest.digest);
    let record = pull_anonymously(&store, &by_digest).await.unwrap();
    assert!(record.repo_tags.is_empty());
    assert_eq!(record.repo_digests, vec![by_digest.clone()]);
    let tagged = pull_anonymously(&store, &env.reference("test/digest:v1"))
        .await
        .unwrap();
    assert_eq!(tagged.id, record.id);
    assert_eq!(tagged.repo_tags, vec![env.reference("test/digest:v1")]);
    assert_eq!(tagged.repo_digests, vec![by_digest.clone()]);
    assert_eq!(store.list().len(), 1);
    for query in [by_digest.as_str(), record.id.as_str(), record.id.hex()] {
        assert_eq!(
            store.status(query).map(|r| r.id),
            Some(record.id.clone()),
            "{query}"
        );
    }
    // A digest the registry does not have.
    let missing = format!("{}@sha256:{}", env.reference("test/digest"), "0".repeat(64));
    let err = pull_anonymously(&store, &missing).await.unwrap_err();
    assert_registry_status(&err, 404);
}

#[tokio::test]
async fn retagging_moves_the_tag_and_keeps_the_old_image_by_digest() {
    let env = Env::start(RegistryOptions::default());
    let build = |content: &str| one_file_image("v", content);
    let (old, new) = (build("old"), build("new"));
    let pusher = env.registry.pusher().unwrap();
    pusher
        .push_image("test/moving", "latest", &old)
        .await
        .unwrap();
    let store = env.store();
    let reference = env.reference("test/moving:latest");
    let first = pull_anonymously(&store, &reference).await.unwrap();
    pusher
        .push_image("test/moving", "latest", &new)
        .await
        .unwrap();
    let second = pull_anonymously(&store, &reference).await.unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(store.status(&reference).unwrap().id, second.id);
    // The old image kept its digest name, so it stays listed, without the tag.
    let old_record = store.status(first.id.as_str()).unwrap();
    assert!(old_record.repo_tags.is_empty());
    assert_eq!(store.list().len(), 2);
}
