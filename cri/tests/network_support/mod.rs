//! Shared by the network and pause tests: running a test body inside fresh
//! network and mount namespaces, and CNI fixtures in temp dirs.
#![allow(dead_code)] // each test file uses a different part

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_cri::network::{CniManager, CniSettings, PodNetwork};
use tempfile::TempDir;

const ISOLATED_ENV: &str = "BERTH_TEST_ISOLATED";

/// Runs `body` in a copy of this test binary started by `unshare` in new
/// network and mount namespaces (mounts private), so bridges, iptables
/// rules and mounts it makes vanish with it and never touch the host.
/// `test_name` must be the test's own name (it is the filter for the copy).
pub fn isolated(test_name: &str, body: impl FnOnce() -> anyhow::Result<()>) {
    if std::env::var(ISOLATED_ENV).as_deref() == Ok(test_name) {
        run(Command::new("ip").args(["link", "set", "lo", "up"])).unwrap();
        // Like `ip netns exec`: /sys then shows this netns' devices.
        run(Command::new("mount").args(["-t", "sysfs", "sysfs", "/sys"])).unwrap();
        body().unwrap();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ISOLATED_ENV, test_name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "isolated test {test_name} failed");
    assert!(
        stdout.contains("1 passed"),
        "isolated copy did not run {test_name}"
    );
}

/// Runs a command, failing with its output if it does not succeed.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    berth_tests::wait_for(timeout, what, || cond().then_some(())).unwrap();
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Temp conf, bin, cache, host-local data and netns dirs.
pub struct CniFixture {
    pub root: TempDir,
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub data_dir: PathBuf,
    pub netns_dir: PathBuf,
}

pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

impl CniFixture {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let sub = |name: &str| {
            let p = root.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        CniFixture {
            conf_dir: sub("net.d"),
            bin_dir: sub("bin"),
            cache_dir: sub("cache"),
            data_dir: sub("host-local"),
            netns_dir: sub("netns"),
            root,
        }
    }

    pub fn write_conf(&self, file: &str, content: &str) {
        std::fs::write(self.conf_dir.join(file), content).unwrap();
    }

    /// bridge (with host-local IPAM in the fixture's data dir) + portmap.
    pub fn bridge_conflist(&self, network: &str, extra_plugin: Option<&str>) -> String {
        let extra = extra_plugin.map(|p| format!(",{p}")).unwrap_or_default();
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{network}","plugins":[
              {{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"hairpinMode":true,
                "ipam":{{"type":"host-local","dataDir":"{data}","routes":[{{"dst":"0.0.0.0/0"}}],
                         "ranges":[[{{"subnet":"10.99.0.0/24"}}]]}}}},
              {{"type":"portmap","capabilities":{{"portMappings":true}}}}{extra}]}}"#,
            data = self.data_dir.display()
        )
    }

    pub fn settings(&self, bin_dirs: Vec<PathBuf>) -> CniSettings {
        CniSettings {
            conf_dir: self.conf_dir.clone(),
            bin_dirs,
            cache_dir: self.cache_dir.clone(),
            ..CniSettings::default()
        }
    }

    /// A manager over the reference plugins and the fixture's bin dir.
    pub fn manager(&self) -> CniManager {
        CniManager::new(self.settings(vec![self.bin_dir.clone(), PathBuf::from(REFERENCE_PLUGINS)]))
    }

    /// Installs a shell script plugin that records each call next to
    /// itself (`<name>.<COMMAND>.stdin`, `<name>.<COMMAND>.env`, and a line
    /// in `calls.log`), fails printing `<name>.<COMMAND>.fail` if that file
    /// exists, hangs if `<name>.<COMMAND>.sleep` exists, and answers ADD
    /// with the contents of `<name>.result`.
    pub fn install_recording_plugin(&self, name: &str, result: &str) {
        let script = r#"#!/bin/sh
here=$(dirname "$0"); me=$(basename "$0")
cat > "$here/$me.$CNI_COMMAND.stdin"
env | grep '^CNI_' | sort > "$here/$me.$CNI_COMMAND.env"
echo "$me $CNI_COMMAND" >> "$here/calls.log"
if [ -f "$here/$me.$CNI_COMMAND.fail" ]; then cat "$here/$me.$CNI_COMMAND.fail"; exit 1; fi
if [ -f "$here/$me.$CNI_COMMAND.sleep" ]; then exec sleep 60; fi
if [ "$CNI_COMMAND" = ADD ]; then cat "$here/$me.result"; fi
exit 0
"#;
        let path = self.bin_dir.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(self.bin_dir.join(format!("{name}.result")), result).unwrap();
    }

    pub fn recorded(&self, name: &str, command: &str, kind: &str) -> String {
        std::fs::read_to_string(self.bin_dir.join(format!("{name}.{command}.{kind}")))
            .unwrap_or_default()
    }

    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin_dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Lease files host-local holds for `network`.
    pub fn leases(&self, network: &str) -> Vec<String> {
        let dir = self.data_dir.join(network);
        let Ok(listing) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut ips: Vec<String> = listing
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        ips.sort();
        ips
    }
}

pub fn pod(sandbox_id: &str, netns: Option<&Path>) -> PodNetwork {
    PodNetwork {
        sandbox_id: sandbox_id.to_string(),
        netns: netns.map(Path::to_path_buf),
        namespace: "default".into(),
        name: format!("pod-{sandbox_id}"),
        uid: format!("uid-{sandbox_id}"),
        ..PodNetwork::default()
    }
}

/// A 1.0.0 ADD result with eth0 in the sandbox holding `ip`.
pub fn canned_result(ip: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"/x"}}],
            "ips":[{{"address":"{ip}/24","interface":0}}]}}"#
    )
}
