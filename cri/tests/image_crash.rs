//! A puller killed mid-download (SIGKILL, its own process) leaves a store that opens
//! clean, and the next pull completes.

mod image_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::registry::{
    ImageBuilder, LayerBuilder, LayerCompression, RegistryOptions, pseudo_random_bytes,
};
use image_common::{Env, list_dir, pull_anonymously};

/// Builds (if needed) and locates the `berth-image-pull` helper of berth-tests.
fn puller_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "berth-tests",
            "--bin",
            "berth-image-pull",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building berth-image-pull failed");
    // target/<profile>/deps/<this test> → target/<profile>/berth-image-pull
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("berth-image-pull")
}

#[tokio::test]
async fn killed_puller_leaves_a_consistent_store_and_the_next_pull_completes() {
    let puller = puller_binary();
    let env = Env::start(RegistryOptions::default());
    let big = LayerBuilder::new()
        .file("big", pseudo_random_bytes(7, 96 << 20), 0o644)
        .build(LayerCompression::None);
    let small = LayerBuilder::new()
        .file("small", "s", 0o644)
        .build(LayerCompression::Gzip);
    let image = ImageBuilder::new().layer(small).layer(big.clone()).build();
    let reference = env.push("test/crash", "v1", &image).await;

    let mut child = Command::new(&puller)
        .arg("--root")
        .arg(env.root.path())
        .arg("--hosts-dir")
        .arg(env.hosts.path())
        .arg(&reference)
        .spawn()
        .unwrap();
    // Wait until the big blob is partly downloaded, then kill.
    let staging = env.root.path().join("staging");
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let sizes: Vec<u64> = std::fs::read_dir(&staging)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(&size) = sizes.iter().find(|&&s| s > (1 << 20) && s < (96 << 20)) {
            break size;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the puller finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "no partial download appeared");
        std::thread::sleep(Duration::from_millis(2));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(partial > 0);
    assert!(
        !list_dir(&staging).is_empty(),
        "the kill left a partial download behind"
    );

    // Reopening clears staging; no record points at missing data.
    let store = env.store();
    assert!(store.list().is_empty());
    assert_eq!(list_dir(&staging), Vec::<String>::new());
    assert!(
        !store
            .root()
            .join("blobs/sha256")
            .join(big.digest.trim_start_matches("sha256:"))
            .exists()
    );

    let record = pull_anonymously(&store, &reference).await.unwrap();
    let dirs = store.layer_dirs(&record).unwrap();
    assert_eq!(
        std::fs::metadata(dirs[1].join("big")).unwrap().len(),
        96 << 20
    );
    assert_eq!(store.list().len(), 1);
}
