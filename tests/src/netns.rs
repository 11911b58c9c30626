//! Named network namespaces (`ip netns add`) that are deleted on drop.

use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;

pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `berth-test-<unique>` under /run/netns.
    pub fn new() -> anyhow::Result<Self> {
        let name = crate::unique_name("berth-test");
        run_ip(&["netns", "add", &name])?;
        Ok(Self { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, usable as an OCI namespace `path`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside this namespace. Uses `nsenter`
    /// rather than `ip netns exec`, which remounts /sys and hides cgroups.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        command
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run_ip(&["netns", "delete", &self.name]);
    }
}

fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    anyhow::ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
