//! Locating the workspace's binaries. `scripts/test` builds them before the
//! tests run; tests never build anything themselves.

use std::path::PathBuf;

/// The workspace's target directory: `CARGO_TARGET_DIR` if set, else `target/`
/// next to this crate.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `target/debug/<name>`.
pub fn workspace_binary(name: &str) -> PathBuf {
    target_dir().join("debug").join(name)
}

/// The runc-compatible runtime under test: `BERTH_TEST_RUNTIME` (e.g.
/// `/usr/sbin/runc` to check that a test encodes upstream behaviour), else the
/// workspace's `berth-runtime`.
pub fn runtime_binary() -> PathBuf {
    match std::env::var_os("BERTH_TEST_RUNTIME") {
        Some(path) => PathBuf::from(path),
        None => workspace_binary("berth-runtime"),
    }
}
