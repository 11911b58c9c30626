//! `scripts/run-node`'s demo run non-interactively (`berth-demo --once`): the
//! pod answers HTTP, and afterwards the pod, the daemon, its network
//! namespace, cgroups and state dir are all gone.

use std::process::Command;

use berth_tests::bins::workspace_binary;

/// The value of the line starting with `label` in the demo's output.
fn field<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{output}"))
        .trim()
}

#[test]
fn demo_serves_http_from_a_pod_and_leaves_nothing_behind() -> anyhow::Result<()> {
    let berth_cri = berth_tests::cri::berth_cri_binary();
    if !berth_cri.is_file() {
        eprintln!("SKIP: {} is not built", berth_cri.display());
        return Ok(());
    }
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("demo");
    let output = Command::new(workspace_binary("berth-demo"))
        .arg("--once")
        .arg("--dir")
        .arg(&dir)
        .arg("--berth-cri")
        .arg(&berth_cri)
        .arg("--cni-bin-dir")
        .arg(berth_tests::bins::target_dir().join("debug"))
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let ip: std::net::IpAddr = field(&stdout, "pod IP:").parse()?;
    assert!(ip.is_ipv4(), "{stdout}");
    assert!(stdout.contains(" 200 OK"), "{stdout}");
    assert!(stdout.contains("| hello from a berth pod"), "{stdout}");

    let daemon_pid = field(&stdout, "berth-cri: pid")
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        !std::path::Path::new(&format!("/proc/{daemon_pid}")).exists(),
        "berth-cri (pid {daemon_pid}) still runs"
    );
    let netns = field(&stdout, "netns:");
    assert!(
        !std::path::Path::new("/run/netns").join(netns).exists(),
        "netns {netns} left behind"
    );
    let cgroups = field(&stdout, "cgroups:");
    assert!(
        berth_tests::cgroup::existing(cgroups).is_empty(),
        "cgroups {cgroups} left behind"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    Ok(())
}
