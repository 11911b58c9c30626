//! Bad registry content and registry errors: clear errors naming image and blob, a
//! store left consistent, and a next pull that succeeds once the content is good.

mod image_common;

use berth_cri::image::{Credentials, ImageError};
use berth_tests::registry::{
    Blob, ImageBuilder, LayerBuilder, LayerCompression, OCI_MANIFEST, Proxy, RegistryOptions,
    ScriptedAnswer,
};
use image_common::{Env, assert_registry_status, list_dir, pull_anonymously};

fn small_image(content: &str) -> berth_tests::registry::BuiltImage {
    ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("f", vec![b'x'; 64 * 1024], 0o644)
                .build(LayerCompression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file("g", content, 0o644)
                .build(LayerCompression::Gzip),
        )
        .build()
}

/// Nothing half-made: no record, no staging leftovers, no unpacked layer of `bad_diff_id`.
fn assert_consistent(store: &berth_cri::image::ImageStore, bad_diff_id: &str) {
    assert!(store.list().is_empty());
    assert_eq!(
        list_dir(&store.root().join("staging")),
        Vec::<String>::new()
    );
    assert!(
        !store
            .root()
            .join("layers")
            .join(bad_diff_id.trim_start_matches("sha256:"))
            .exists()
    );
}

#[tokio::test]
async fn missing_tag_is_a_404_naming_the_image() {
    let env = Env::start(RegistryOptions::default());
    let store = env.store();
    let err = pull_anonymously(&store, &env.reference("test/absent:v1"))
        .await
        .unwrap_err();
    assert_registry_status(&err, 404);
    assert!(err.to_string().contains("test/absent"), "{err}");
    let bad = pull_anonymously(&store, "UPPER/Case::bad")
        .await
        .unwrap_err();
    assert!(matches!(bad, ImageError::InvalidReference { .. }), "{bad}");
}

#[tokio::test]
async fn corrupted_blob_is_a_digest_error_and_the_next_pull_succeeds() {
    let env = Env::start(RegistryOptions::default());
    let image = small_image("good");
    let reference = env.push("test/corrupt", "v1", &image).await;
    let layer = &image.layers[1];
    let stored = env.registry.blob_data_path(&layer.digest);
    let good = std::fs::read(&stored).unwrap();
    let mut evil = good.clone();
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    std::fs::write(&stored, &evil).unwrap();

    let store = env.store();
    let err = pull_anonymously(&store, &reference).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::Blob { .. }), "{msg}");
    assert!(
        msg.contains(&layer.digest) && msg.contains("test/corrupt"),
        "{msg}"
    );
    assert_consistent(&store, &layer.diff_id);
    assert!(
        !store
            .root()
            .join("blobs/sha256")
            .join(layer.digest.trim_start_matches("sha256:"))
            .exists()
    );

    std::fs::write(&stored, &good).unwrap();
    let record = pull_anonymously(&store, &reference).await.unwrap();
    assert_eq!(record.id.as_str(), image.config.digest);
}

#[tokio::test]
async fn truncated_blob_fails_and_leaves_nothing_behind() {
    let env = Env::start(RegistryOptions::default());
    let image = small_image("truncated");
    let reference = env.push("test/short", "v1", &image).await;
    let layer = &image.layers[0];
    let stored = env.registry.blob_data_path(&layer.digest);
    let good = std::fs::read(&stored).unwrap();
    std::fs::write(&stored, &good[..good.len() / 2]).unwrap();
    let store = env.store();
    let err = pull_anonymously(&store, &reference).await.unwrap_err();
    assert!(err.to_string().contains(&layer.digest), "{err}");
    assert_consistent(&store, &layer.diff_id);
    std::fs::write(&stored, &good).unwrap();
    pull_anonymously(&store, &reference).await.unwrap();
}

#[tokio::test]
async fn unknown_layer_media_type_is_refused_by_name() {
    let env = Env::start(RegistryOptions::default());
    let image = small_image("media");
    let pusher = env.registry.pusher().unwrap();
    for layer in &image.layers {
        pusher
            .push_blob("test/media", &layer.blob, &layer.digest)
            .await
            .unwrap();
    }
    pusher
        .push_blob("test/media", &image.config.data, &image.config.digest)
        .await
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": image.config.media_type, "digest": image.config.digest, "size": image.config.data.len()},
        "layers": image.layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.example.layer.v1+squashfs", "digest": l.digest, "size": l.blob.len()
        })).collect::<Vec<_>>(),
    });
    let doc = Blob::new(OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap());
    pusher
        .push_manifest("test/media", "v1", &doc)
        .await
        .unwrap();
    let store = env.store();
    let err = pull_anonymously(&store, &env.reference("test/media:v1"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("application/vnd.example.layer.v1+squashfs")
            && msg.contains(&image.layers[0].digest),
        "{msg}"
    );
    assert_consistent(&store, &image.layers[0].diff_id);
}

#[tokio::test]
async fn diff_id_mismatch_is_refused() {
    let env = Env::start(RegistryOptions::default());
    let good = small_image("one");
    let other = LayerBuilder::new()
        .file("g", "two", 0o644)
        .build(LayerCompression::Gzip);
    // A config whose diff id does not match the layer blob the manifest names.
    let lying =
        ImageBuilder::new()
            .layer(good.layers[0].clone())
            .layer(berth_tests::registry::Layer {
                diff_id: good.layers[1].diff_id.clone(),
                ..other.clone()
            });
    let lying = lying.build();
    env.push("test/lying", "v1", &lying).await;
    let store = env.store();
    let err = pull_anonymously(&store, &env.reference("test/lying:v1"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&other.digest) && msg.contains("config says"),
        "{msg}"
    );
    assert!(store.list().is_empty());
    assert_eq!(
        list_dir(&store.root().join("staging")),
        Vec::<String>::new()
    );
}

/// A proxy in front of the registry answering the first `failures` requests with
/// `status` (and `Retry-After: 0`), then forwarding everything.
fn flaky_proxy(env: &Env, status: &'static str, failures: usize) -> Proxy {
    let proxy = Proxy::http(
        &env.registry.host(),
        vec![ScriptedAnswer {
            path_contains: "/v2/".into(),
            status,
            headers: vec![("Retry-After".into(), "0".into())],
            times: failures,
        }],
    )
    .unwrap();
    let dir = env.hosts.path().join(proxy.host());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!("server = \"http://{}\"\n", proxy.host()),
    )
    .unwrap();
    proxy
}

#[tokio::test]
async fn too_many_requests_is_retried_until_the_registry_serves() {
    let env = Env::start(RegistryOptions::default());
    let image = small_image("retry");
    env.push("test/flaky", "v1", &image).await;
    let proxy = flaky_proxy(&env, "429 Too Many Requests", 2);
    let store = env.store();
    let record = store
        .pull(
            &format!("{}/test/flaky:v1", proxy.host()),
            &Credentials::anonymous(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(record.id.as_str(), image.config.digest);
}

#[tokio::test]
async fn persistent_server_errors_fail_with_the_status_and_leave_nothing() {
    let env = Env::start(RegistryOptions::default());
    let proxy = flaky_proxy(&env, "503 Service Unavailable", usize::MAX);
    let store = env.store();
    let err = store
        .pull(
            &format!("{}/test/down:v1", proxy.host()),
            &Credentials::anonymous(),
            None,
        )
        .await
        .unwrap_err();
    assert_registry_status(&err, 503);
    assert!(err.to_string().contains("test/down"), "{err}");
    assert!(store.list().is_empty());
    assert_eq!(
        list_dir(&store.root().join("staging")),
        Vec::<String>::new()
    );
}

#[test]
fn full_disk_fails_naming_image_and_blob_and_leaves_the_store_consistent() {
    let env = Env::start(RegistryOptions::default());
    let image = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .file("small", "s", 0o644)
                .build(LayerCompression::Gzip),
        )
        .layer(
            LayerBuilder::new()
                .file(
                    "big",
                    berth_tests::registry::pseudo_random_bytes(3, 24 << 20),
                    0o644,
                )
                .build(LayerCompression::Gzip),
        )
        .build();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(
            env.registry
                .pusher()
                .unwrap()
                .push_image("test/full", "v1", &image),
        )
        .unwrap();
    drop(runtime);
    let reference = env.reference("test/full:v1");
    let mountpoint = tempfile::tempdir().unwrap();
    // The store lives on a 16 MiB tmpfs, mounted in a private namespace; the runtime is
    // built on that thread so its workers share the namespace.
    let (err, listed, staging) = image_common::in_private_mount_ns(|| {
        nix::mount::mount(
            Some("tmpfs"),
            mountpoint.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=16m"),
        )
        .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = env.store_at(mountpoint.path());
        let err = runtime
            .block_on(store.pull(&reference, &Credentials::anonymous(), None))
            .unwrap_err();
        let seen = (
            err.to_string(),
            store.list().len(),
            list_dir(&store.root().join("staging")),
        );
        drop(runtime);
        nix::mount::umount(mountpoint.path()).unwrap();
        seen
    });
    assert!(
        err.contains("test/full") && err.contains(&image.layers[1].digest),
        "{err}"
    );
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(listed, 0);
    assert_eq!(staging, Vec::<String>::new());
}
