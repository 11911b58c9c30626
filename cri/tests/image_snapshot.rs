//! Snapshots: read-write and read-only overlay mounts, shared layer dirs, leases.

mod image_common;

use berth_cri::image::{Credentials, ImageError, Snapshotter};
use berth_tests::registry::{
    ImageBuilder, LayerBuilder, LayerCompression, RegistryOptions, busybox_layer,
};
use image_common::{Env, in_private_mount_ns, list_dir, pull_anonymously};

#[tokio::test]
async fn read_only_snapshots_refuse_writes_and_layers_are_shared() {
    let env = Env::start(RegistryOptions::default());
    let base = busybox_layer().build(LayerCompression::Gzip);
    let one = ImageBuilder::new().layer(base.clone()).build();
    let two = ImageBuilder::new()
        .layer(base)
        .layer(
            LayerBuilder::new()
                .file("etc/two", "2", 0o644)
                .build(LayerCompression::Gzip),
        )
        .build();
    let pusher = env.registry.pusher().unwrap();
    pusher.push_image("test/one", "v1", &one).await.unwrap();
    pusher.push_image("test/two", "v1", &two).await.unwrap();
    let store = env.store();
    let anonymous = Credentials::anonymous();
    let r1 = store
        .pull(&env.reference("test/one:v1"), &anonymous, None)
        .await
        .unwrap();
    let r2 = store
        .pull(&env.reference("test/two:v1"), &anonymous, None)
        .await
        .unwrap();
    // Both images use the one busybox layer dir.
    assert_eq!(
        store.layer_dirs(&r1).unwrap()[0],
        store.layer_dirs(&r2).unwrap()[0]
    );
    assert_eq!(list_dir(&store.root().join("layers")).len(), 2);

    let snapshotter = Snapshotter::new(store.clone()).unwrap();
    let ro_single = snapshotter
        .prepare("ro-one", &env.reference("test/one:v1"), true)
        .unwrap();
    assert_eq!(ro_single.mount.fstype, "bind");
    let ro_multi = snapshotter
        .prepare("ro-two", &env.reference("test/two:v1"), true)
        .unwrap();
    assert_eq!(ro_multi.mount.fstype, "overlay");
    assert!(
        ro_multi
            .mount
            .options
            .iter()
            .all(|o| !o.starts_with("upperdir"))
    );
    let rw = snapshotter
        .prepare("rw-two", r2.id.as_str(), false)
        .unwrap();
    let err = snapshotter
        .prepare("rw-two", r2.id.as_str(), false)
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(
        snapshotter
            .prepare("../escape", r2.id.as_str(), false)
            .is_err()
    );
    assert_eq!(snapshotter.list().unwrap().len(), 3);
    assert_eq!(snapshotter.get("rw-two").unwrap(), Some(rw.clone()));

    let targets: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let outcomes = in_private_mount_ns(|| {
        let mut out = Vec::new();
        for (snap, target) in [&ro_single, &ro_multi, &rw].into_iter().zip(&targets) {
            snap.mount.mount_at(target.path()).unwrap();
            assert!(target.path().join("bin/busybox").is_file());
            let write = std::fs::write(target.path().join("new-file"), "x");
            out.push(write.map_err(|e| e.raw_os_error()));
            nix::mount::umount(target.path()).unwrap();
        }
        out
    });
    assert_eq!(outcomes[0], Err(Some(libc::EROFS)));
    assert_eq!(outcomes[1], Err(Some(libc::EROFS)));
    assert_eq!(outcomes[2], Ok(()));
    // The lower layer is untouched by the container's write.
    assert!(!store.layer_dirs(&r2).unwrap()[1].join("new-file").exists());

    // Leased by snapshots: neither removal nor gc takes the image.
    assert!(matches!(
        store.remove(&env.reference("test/two:v1")),
        Err(ImageError::InUse { .. })
    ));
    store.gc().await.unwrap();
    assert_eq!(list_dir(&store.root().join("layers")).len(), 2);
    for id in ["ro-one", "ro-two", "rw-two"] {
        snapshotter.remove(id).unwrap();
    }
    assert!(snapshotter.list().unwrap().is_empty());
    store.remove(&env.reference("test/two:v1")).unwrap();
    let report = store.gc().await.unwrap();
    assert_eq!(
        report.layers_removed, 1,
        "the shared busybox layer stays for test/one"
    );
    assert!(store.layer_dirs(&r1).is_ok());
}

#[tokio::test]
async fn an_image_with_eighty_layers_fits_in_one_overlay_mount() {
    let env = Env::start(RegistryOptions::default());
    let mut builder = ImageBuilder::new().layer(busybox_layer().build(LayerCompression::Gzip));
    for n in 1..80 {
        builder = builder.layer(
            LayerBuilder::new()
                .file(format!("layers/{n}"), n.to_string(), 0o644)
                .build(LayerCompression::Gzip),
        );
    }
    let image = builder.build();
    env.push("test/tall", "v1", &image).await;
    let store = env.store();
    let record = pull_anonymously(&store, &env.reference("test/tall:v1"))
        .await
        .unwrap();
    let snapshotter = Snapshotter::new(store.clone()).unwrap();
    let snap = snapshotter
        .prepare("tall", record.id.as_str(), false)
        .unwrap();
    let target = tempfile::tempdir().unwrap();
    let seen = in_private_mount_ns(|| {
        snap.mount.mount_at(target.path()).unwrap();
        let seen = list_dir(&target.path().join("layers")).len();
        nix::mount::umount(target.path()).unwrap();
        seen
    });
    assert_eq!(seen, 79);
    snapshotter.remove("tall").unwrap();
    store.remove(record.id.as_str()).unwrap();
    store.gc().await.unwrap();
    assert_eq!(list_dir(&store.root().join("l")), Vec::<String>::new());
}

/// Snapshots and leases are written without waiting for the disk: reopening
/// repairs what a power loss can leave (a torn lease file, a snapshot whose
/// record never reached the disk).
#[tokio::test]
async fn reopening_rebuilds_leases_from_the_snapshots_found() {
    let env = Env::start(RegistryOptions::default());
    let image = ImageBuilder::new()
        .layer(busybox_layer().build(LayerCompression::Gzip))
        .build();
    env.push("test/leased", "v1", &image).await;
    let store = env.store();
    let record = pull_anonymously(&store, &env.reference("test/leased:v1"))
        .await
        .unwrap();
    let snapshotter = Snapshotter::new(store.clone()).unwrap();
    snapshotter
        .prepare("kept", record.id.as_str(), false)
        .unwrap();
    snapshotter
        .prepare("torn", record.id.as_str(), false)
        .unwrap();
    let root = store.root().to_path_buf();
    drop((snapshotter, store));
    std::fs::write(root.join("snapshots/torn/snapshot.json"), "").unwrap();
    std::fs::write(root.join("leases.json"), "{\"snap").unwrap();

    let store = env.store();
    let snapshotter = Snapshotter::new(store.clone()).unwrap();
    let ids: Vec<_> = snapshotter
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["kept"]);
    assert!(!root.join("snapshots/torn").exists());
    // The surviving snapshot leases its image again.
    assert!(matches!(
        store.remove(record.id.as_str()),
        Err(ImageError::InUse { .. })
    ));
    snapshotter.remove("kept").unwrap();
    store.remove(record.id.as_str()).unwrap();
}
