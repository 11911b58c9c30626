//! Layer extraction: metadata kept, hostile archives confined to the layer directory.

mod image_common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_cri::image::Compression;
use berth_cri::image::unpack::unpack_layer;
use berth_tests::registry::{LayerBuilder, LayerCompression};
use image_common::xattr;

/// A layer dir next to an "outside" dir holding a decoy file hostile entries aim at.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("layer")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret"), "original").unwrap();
        Sandbox { dir }
    }

    fn layer(&self) -> std::path::PathBuf {
        self.dir.path().join("layer")
    }

    fn unpack(&self, layer: &LayerBuilder) -> Result<(), berth_cri::image::unpack::UnpackError> {
        unpack_layer(&layer.tar()[..], Compression::None, &self.layer()).map(drop)
    }

    /// The outside dir is exactly as made: one file, unchanged, not hardlinked.
    fn assert_outside_untouched(&self) {
        let outside = self.dir.path().join("outside");
        let names: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
        let meta = std::fs::metadata(outside.join("secret")).unwrap();
        assert_eq!(meta.nlink(), 1);
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "original"
        );
        let top: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(top.len(), 2, "nothing new next to the layer: {top:?}");
    }
}

#[test]
fn metadata_devices_links_and_xattrs_are_preserved() {
    let sb = Sandbox::new();
    let layer = LayerBuilder::new()
        .dir("d", 0o750)
        .owner(1000, 1001)
        .file("d/suid", "x", 0o4755)
        .owner(1000, 1000)
        .file("d/attr", "x", 0o640)
        .xattr("user.berth", "value")
        .hardlink("d/link", "d/attr")
        .symlink("d/sym", "../nowhere")
        .char_device("dev-null", 1, 3)
        .block_device("blk", 7, 0)
        .fifo("fifo");
    let tar = layer.tar();
    let unpacked = unpack_layer(
        &layer.build(LayerCompression::Gzip).blob[..],
        Compression::Gzip,
        &sb.layer(),
    )
    .unwrap();
    assert_eq!(
        unpacked.diff_id.as_str(),
        berth_tests::registry::sha256_digest(&tar)
    );
    let root = sb.layer();
    let d = std::fs::metadata(root.join("d")).unwrap();
    assert_eq!(
        (d.uid(), d.gid(), d.permissions().mode() & 0o7777),
        (1000, 1001, 0o750)
    );
    let suid = std::fs::metadata(root.join("d/suid")).unwrap();
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((suid.uid(), suid.gid()), (1000, 1000));
    assert_eq!(suid.mtime(), 1_700_000_000);
    assert_eq!(
        d.mtime(),
        1_700_000_000,
        "directory mtime is set after its children"
    );
    let attr = std::fs::metadata(root.join("d/attr")).unwrap();
    assert_eq!(
        attr.ino(),
        std::fs::metadata(root.join("d/link")).unwrap().ino()
    );
    assert_eq!(attr.nlink(), 2);
    assert_eq!(
        xattr(&root.join("d/attr"), "user.berth").as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        std::fs::read_link(root.join("d/sym")).unwrap(),
        Path::new("../nowhere")
    );
    let null = std::fs::symlink_metadata(root.join("dev-null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert!(
        std::fs::symlink_metadata(root.join("blk"))
            .unwrap()
            .file_type()
            .is_block_device()
    );
    assert!(
        std::fs::symlink_metadata(root.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn dot_dot_and_absolute_paths_land_inside_the_layer() {
    let sb = Sandbox::new();
    sb.unpack(
        &LayerBuilder::new()
            .file("../outside/secret", "overwritten?", 0o644)
            .file("../../../../../../escaped-abs", "x", 0o644)
            .file("/outside/abs", "x", 0o644),
    )
    .unwrap();
    sb.assert_outside_untouched();
    let root = sb.layer();
    assert_eq!(
        std::fs::read_to_string(root.join("outside/secret")).unwrap(),
        "overwritten?"
    );
    assert!(root.join("escaped-abs").is_file());
    assert!(root.join("outside/abs").is_file());
}

#[test]
fn file_written_through_an_escaping_symlink_stays_inside() {
    let sb = Sandbox::new();
    let outside = sb.dir.path().join("outside");
    sb.unpack(
        &LayerBuilder::new()
            .symlink("rel", "../outside")
            .file("rel/secret", "through relative link", 0o644)
            .symlink("abs", outside.to_str().unwrap())
            .file("abs/secret", "through absolute link", 0o644)
            .symlink("up", "../../../../..")
            .file("up/planted", "x", 0o644),
    )
    .unwrap();
    sb.assert_outside_untouched();
    let root = sb.layer();
    // Links are kept as written; following them resolves inside the layer.
    assert_eq!(
        std::fs::read_link(root.join("rel")).unwrap(),
        Path::new("../outside")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("outside/secret")).unwrap(),
        "through relative link"
    );
    let inside_abs = root.join(outside.strip_prefix("/").unwrap()).join("secret");
    assert_eq!(
        std::fs::read_to_string(inside_abs).unwrap(),
        "through absolute link"
    );
    assert!(root.join("planted").is_file());
}

#[test]
fn hardlinks_cannot_reach_outside_files() {
    let sb = Sandbox::new();
    let outside_secret = sb.dir.path().join("outside/secret");
    let result = sb.unpack(
        &LayerBuilder::new()
            .hardlink("h1", "../outside/secret")
            .hardlink("h2", outside_secret.to_str().unwrap()),
    );
    assert!(
        result.is_err(),
        "a link to a file the layer does not have must fail"
    );
    sb.assert_outside_untouched();
    // A symlink as hardlink target is linked itself, never followed.
    let sb = Sandbox::new();
    sb.unpack(
        &LayerBuilder::new()
            .symlink("s", "../outside/secret")
            .hardlink("h", "s")
            .file("h", "replaces the link, not the target", 0o644),
    )
    .unwrap();
    sb.assert_outside_untouched();
}

#[test]
fn a_later_entry_replaces_a_symlink_instead_of_writing_through_it() {
    let sb = Sandbox::new();
    let outside_secret = sb.dir.path().join("outside/secret");
    sb.unpack(
        &LayerBuilder::new()
            .symlink("target", outside_secret.to_str().unwrap())
            .file("target", "replaced", 0o644),
    )
    .unwrap();
    sb.assert_outside_untouched();
    let t = sb.layer().join("target");
    assert!(std::fs::symlink_metadata(&t).unwrap().is_file());
}

#[test]
fn corrupt_streams_fail_with_the_entry_named() {
    let sb = Sandbox::new();
    let mut blob = LayerBuilder::new()
        .file("f", vec![7u8; 100_000], 0o644)
        .build(LayerCompression::Gzip)
        .blob;
    blob.truncate(blob.len() / 2);
    let err = unpack_layer(&blob[..], Compression::Gzip, &sb.layer()).unwrap_err();
    assert!(
        err.to_string().contains('f') || err.to_string().contains("reading"),
        "{err}"
    );
}
