//! Debian's containerd 1.6 as the reference CRI endpoint: a generated config
//! with its own root, state and sockets under the test's dir, runc through the
//! io.containerd.runc.v2 shim, our CNI conf and bin dirs, and pulls through a
//! hosts.toml dir (the local registry over plain http).

use std::process::Command;

use super::daemon::DaemonLayout;
use crate::mountns::private_mount_ns_command;

pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";

pub fn command(layout: &DaemonLayout) -> anyhow::Result<Command> {
    let config = layout.dir.join("containerd.toml");
    std::fs::write(&config, config_toml(layout))?;
    let mut command = private_mount_ns_command(CONTAINERD_BIN);
    command.arg("--config").arg(&config);
    Ok(command)
}

fn config_toml(layout: &DaemonLayout) -> String {
    let dir = layout.dir.display();
    let socket = layout.socket.display();
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"

[{cri}]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  Root = "{dir}/runc"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{bin}"
  conf_dir = "{conf}"

[{cri}.registry]
  config_path = "{hosts}"
"#,
        pause = layout.pause_image,
        bin = layout.cni_bin_dir.display(),
        conf = layout.cni_conf_dir.display(),
        hosts = layout.registry_config_dir.display(),
    )
}
