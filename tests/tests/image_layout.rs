//! The OCI image layouts the support library builds are read by an upstream
//! tool (skopeo): manifest, config and layers verify and unpack.

use berth_tests::image::{ImageBuilder, ImageConfig, Layer, busybox_layer};
use berth_tests::tempdir::TempDir;
use std::process::Command;

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (apt install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn skopeo_reads_and_copies_a_multi_layer_layout() {
    let top = Layer::new()
        .file("/etc/motd", "hello", 0o644)
        .whiteout("/etc/hostname")
        .symlink("/usr/bin/greet", "/bin/echo")
        .hardlink("/etc/motd2", "/etc/motd");
    let config = ImageConfig {
        cmd: vec!["cat".into(), "/etc/motd".into()],
        env: vec!["GREETING=hi".into()],
        working_dir: Some("/tmp".into()),
        labels: vec![("org.example.test".into(), "yes".into())],
        ..ImageConfig::default()
    };
    let image = ImageBuilder::new()
        .layer(busybox_layer().unwrap())
        .layer(top)
        .config(config);
    let built = image.build().unwrap();
    let layout = TempDir::new("berth-layout").unwrap();
    built.write_layout(layout.path(), "v1").unwrap();
    let reference = format!("oci:{}:v1", layout.path().display());

    let inspect: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", &reference])).unwrap();
    assert_eq!(inspect["Digest"], built.manifest_digest);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(inspect["Labels"]["org.example.test"], "yes");
    assert!(
        inspect["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hi")
    );

    // Copying verifies every blob against its digest.
    let copy = TempDir::new("berth-layout-copy").unwrap();
    let target = format!("dir:{}", copy.join("out").display());
    skopeo(&["copy", "--quiet", &reference, &target]);
    for layer in &built.layers {
        let hex = layer.digest.trim_start_matches("sha256:");
        assert!(
            copy.join("out").join(hex).exists(),
            "layer {} not copied",
            layer.digest
        );
    }
}
