//! berth-cri as the endpoint under test, configured like the containerd
//! reference: own state dirs, socket, CNI dirs and registry hosts dir.

use std::process::Command;

use super::daemon::DaemonLayout;
use super::endpoint::require_berth_cri;
use crate::mountns::private_mount_ns_command;

pub fn command(layout: &DaemonLayout) -> anyhow::Result<Command> {
    let binary = require_berth_cri()?;
    let dir = &layout.dir;
    let paths = [
        ("--listen", layout.socket.clone()),
        ("--root", dir.join("root")),
        ("--state", dir.join("state")),
        ("--cni-conf-dir", layout.cni_conf_dir.clone()),
        ("--cni-bin-dir", layout.cni_bin_dir.clone()),
        ("--cni-cache-dir", dir.join("cni-cache")),
        ("--netns-dir", dir.join("netns")),
        ("--registry-config-path", layout.registry_config_dir.clone()),
    ];
    let mut command = private_mount_ns_command(&binary);
    for (flag, path) in paths {
        command.arg(flag).arg(path);
    }
    command
        .args(["--stream-address", "127.0.0.1", "--stream-port", "0"])
        .args(&layout.extra_flags);
    Ok(command)
}
