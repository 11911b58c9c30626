//! berth-cri as the endpoint under test, configured like the containerd
//! reference: own state dirs, socket, CNI dirs and registry hosts dir.

use std::process::Command;

use super::daemon::DaemonLayout;
use super::endpoint::require_berth_cri;
use crate::mountns::private_mount_ns_command;

pub fn command(layout: &DaemonLayout) -> anyhow::Result<Command> {
    let binary = require_berth_cri()?;
    let mut command = private_mount_ns_command(&binary);
    command
        .arg("--listen")
        .arg(&layout.socket)
        .arg("--root")
        .arg(layout.dir.join("root"))
        .arg("--state")
        .arg(layout.dir.join("state"))
        .arg("--cni-conf-dir")
        .arg(&layout.cni_conf_dir)
        .arg("--cni-bin-dir")
        .arg(&layout.cni_bin_dir)
        .arg("--cni-cache-dir")
        .arg(layout.dir.join("cni-cache"))
        .arg("--netns-dir")
        .arg(layout.dir.join("netns"))
        .arg("--registry-config-path")
        .arg(&layout.registry_config_dir)
        .args(["--stream-address", "127.0.0.1", "--stream-port", "0"])
        .args(&layout.extra_flags);
    Ok(command)
}
