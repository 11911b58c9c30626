//! The CNI setup both endpoints get: a bridge conflist (bridge + host-local +
//! portmap, leases kept in the test's dir) and a bin dir holding the
//! workspace's plugins. Everything runs inside the test's network namespace.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The plugins containerd and berth-cri execute (loopback for the pod's `lo`).
pub const PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// `BERTH_TEST_CNI_BIN_DIR` overrides where the plugins come from (e.g.
/// /usr/lib/cni for the reference plugins); default: the workspace's build.
pub const CNI_BIN_DIR_VAR: &str = "BERTH_TEST_CNI_BIN_DIR";

/// Writes `<dir>/net.d/10-berth-test.conflist` and `<dir>/cni-bin/<plugin>`
/// links; returns (conf dir, bin dir). Environment `instance` n gets bridge
/// `berth<n>` and pod subnet 10.(88+n).0.0/16, which exist only inside the
/// test's network namespace.
pub fn write_cni(dir: &Path, instance: u8) -> anyhow::Result<(PathBuf, PathBuf)> {
    let source = match std::env::var_os(CNI_BIN_DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => crate::bins::target_dir().join("debug"),
    };
    let bin_dir = dir.join("cni-bin");
    std::fs::create_dir_all(&bin_dir)?;
    for plugin in PLUGINS {
        let binary = source.join(plugin);
        anyhow::ensure!(
            binary.is_file(),
            "CNI plugin {} is missing: build it with `cargo build -p berth-cni --bins` \
             (or set {CNI_BIN_DIR_VAR})",
            binary.display()
        );
        std::os::unix::fs::symlink(&binary, bin_dir.join(plugin))
            .with_context(|| format!("linking {}", binary.display()))?;
    }
    let conf_dir = dir.join("net.d");
    std::fs::create_dir_all(&conf_dir)?;
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "berth-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": format!("berth{instance}"),
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("10.{}.0.0/16", 88 + u16::from(instance))}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.join("cni-ipam"),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(
        conf_dir.join("10-berth-test.conflist"),
        serde_json::to_vec_pretty(&conflist)?,
    )?;
    Ok((conf_dir, bin_dir))
}
