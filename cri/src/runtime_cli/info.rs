//! The informational and administrative commands: ps, list, update, spec,
//! features, events.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use oci_spec::runtime::LinuxResources;

use crate::oci::container;
use crate::oci::state::{StateStore, Status};

pub fn ps(store: &StateStore, id: &str, format: &str, ps_args: &[String]) -> anyhow::Result<i32> {
    let pids = container::state::pids(store, id)?;
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&pids)?);
            Ok(0)
        }
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let output = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("running ps")?;
            anyhow::ensure!(
                output.status.success(),
                "ps {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            let text = String::from_utf8_lossy(&output.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let pid_column = header
                .split_whitespace()
                .position(|c| c == "PID")
                .context("ps output has no PID column")?;
            println!("{header}");
            for line in lines {
                let pid = line
                    .split_whitespace()
                    .nth(pid_column)
                    .and_then(|p| p.parse::<i32>().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    println!("{line}");
                }
            }
            Ok(0)
        }
        other => anyhow::bail!("invalid format option {other:?}"),
    }
}

pub fn list(store: &StateStore, format: &str, quiet: bool) -> anyhow::Result<i32> {
    let containers = container::state::list(store)?;
    if quiet {
        for (_, state) in &containers {
            println!("{}", state.id);
        }
        return Ok(0);
    }
    match format {
        "json" => {
            let states: Vec<_> = containers.iter().map(|(_, s)| s).collect();
            println!("{}", serde_json::to_string(&states)?);
        }
        "table" => {
            let mut rows = vec![
                ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                    .map(String::from)
                    .to_vec(),
            ];
            for (_, s) in &containers {
                rows.push(vec![
                    s.id.clone(),
                    s.pid.to_string(),
                    s.status.to_string(),
                    s.bundle.display().to_string(),
                    s.created.clone(),
                    s.owner.clone(),
                ]);
            }
            print!("{}", table(&rows));
        }
        other => anyhow::bail!("invalid format option {other:?}"),
    }
    Ok(0)
}

/// Left-aligned columns separated by at least 6 spaces (the layout of runc's list).
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == columns {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[c] + 6)
                }
            })
            .collect();
        out.push_str(cells.concat().trim_end());
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct UpdateArgs {
    /// JSON file with linux.resources ("-" for stdin).
    #[arg(long, short = 'r')]
    pub resources: Option<PathBuf>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    #[arg(long = "cpu-rt-runtime")]
    pub cpu_rt_runtime: Option<i64>,
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with k/m/g suffix).
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Accepted for compatibility (kernel memory limits are obsolete).
    #[arg(long = "kernel-memory", hide = true)]
    pub kernel_memory: Option<String>,
    pub id: String,
}

/// Parses "512", "64k", "1.5g", "-1" (unlimited) like runc's units.RAMInBytes.
fn parse_bytes(field: &str, text: &str) -> anyhow::Result<i64> {
    if text == "-1" {
        return Ok(-1);
    }
    let lower = text.trim().to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b').trim_end_matches('i');
    let (number, multiplier) = match trimmed.chars().last() {
        Some('k') => (&trimmed[..trimmed.len() - 1], 1i64 << 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 1 << 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 1 << 30),
        Some('t') => (&trimmed[..trimmed.len() - 1], 1 << 40),
        _ => (trimmed, 1),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("--{field}: invalid size {text:?}"))?;
    Ok((value * multiplier as f64) as i64)
}

pub fn update_resources(args: &UpdateArgs) -> anyhow::Result<LinuxResources> {
    let mut resources: LinuxResources = match &args.resources {
        Some(path) => {
            let mut json = Vec::new();
            if path == Path::new("-") {
                std::io::stdin()
                    .read_to_end(&mut json)
                    .context("reading resources from stdin")?;
            } else {
                json =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            }
            serde_json::from_slice(&json).context("parsing resources JSON")?
        }
        None => LinuxResources::default(),
    };
    let mut cpu = resources.cpu().clone().unwrap_or_default();
    let mut cpu_set = false;
    macro_rules! set_cpu {
        ($value:expr, $setter:ident) => {
            if let Some(v) = $value.clone() {
                cpu.$setter(Some(v));
                cpu_set = true;
            }
        };
    }
    set_cpu!(args.cpu_period, set_period);
    set_cpu!(args.cpu_quota, set_quota);
    set_cpu!(args.cpu_rt_period, set_realtime_period);
    set_cpu!(args.cpu_rt_runtime, set_realtime_runtime);
    set_cpu!(args.cpu_share, set_shares);
    set_cpu!(args.cpuset_cpus, set_cpus);
    set_cpu!(args.cpuset_mems, set_mems);
    if cpu_set {
        resources.set_cpu(Some(cpu));
    }
    let mut memory = (*resources.memory()).unwrap_or_default();
    let mut memory_set = false;
    if let Some(v) = &args.memory {
        memory.set_limit(Some(parse_bytes("memory", v)?));
        memory_set = true;
    }
    if let Some(v) = &args.memory_reservation {
        memory.set_reservation(Some(parse_bytes("memory-reservation", v)?));
        memory_set = true;
    }
    if let Some(v) = &args.memory_swap {
        memory.set_swap(Some(parse_bytes("memory-swap", v)?));
        memory_set = true;
    }
    if memory_set {
        resources.set_memory(Some(memory));
    }
    if let Some(limit) = args.pids_limit {
        let mut pids = oci_spec::runtime::LinuxPids::default();
        pids.set_limit(limit);
        resources.set_pids(Some(pids));
    }
    if let Some(weight) = args.blkio_weight {
        let mut blkio = resources.block_io().clone().unwrap_or_default();
        blkio.set_weight(Some(weight));
        resources.set_block_io(Some(blkio));
    }
    Ok(resources)
}

pub fn update(store: &StateStore, args: &UpdateArgs) -> anyhow::Result<i32> {
    let resources = update_resources(args)?;
    crate::oci::container::update::update(store, &args.id, &resources)?;
    Ok(0)
}

pub fn spec(bundle: Option<&Path>, rootless: bool) -> anyhow::Result<i32> {
    let dir = bundle
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join("config.json");
    anyhow::ensure!(
        !path.exists(),
        "File {} exists. Remove it first",
        path.display()
    );
    let mut spec = oci_spec::runtime::Spec::default();
    if rootless {
        let linux = oci_spec::runtime::Linux::rootless(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        spec.set_linux(Some(linux));
    }
    if let Some(process) = spec.process_mut() {
        process.set_terminal(Some(true));
        process.set_args(Some(vec!["sh".into()]));
    }
    spec.set_hostname(Some("berth".into()));
    let json = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(0)
}

pub fn features() -> anyhow::Result<i32> {
    let capabilities: Vec<String> = caps::all()
        .into_iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let features = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::oci::state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": crate::oci::rootfs::mounts::known_options(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": capabilities,
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false},
            "seccomp": {"enabled": true},
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true},
            "mountExtensions": {"idmap": {"enabled": true}},
        },
        "annotations": {},
    });
    println!("{}", serde_json::to_string_pretty(&features)?);
    Ok(0)
}

/// Parses Go-style durations as runc takes them: "5s", "500ms", "1m".
fn parse_interval(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number
        .parse()
        .with_context(|| format!("--interval: invalid duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => anyhow::bail!("--interval: invalid duration {text:?}"),
    };
    anyhow::ensure!(seconds > 0.0, "--interval: must be positive");
    Ok(Duration::from_secs_f64(seconds))
}

pub fn events(
    store: &StateStore,
    id: &str,
    stats_once: bool,
    interval: &str,
) -> anyhow::Result<i32> {
    let interval = parse_interval(interval)?;
    let mut stdout = std::io::stdout();
    let mut oom_kills = None;
    loop {
        let state = store.load(id)?;
        if state.status(&store.dir(id)) == Status::Stopped {
            anyhow::ensure!(!stats_once, "container {id} is not running");
            return Ok(0);
        }
        let stats = state.cgroup_manager()?.stats()?;
        // OOM kills since the previous sample become "oom" events, as runc emits.
        let kills = stats.memory.oom_kill;
        if oom_kills.is_some_and(|previous| kills > previous) {
            writeln!(stdout, "{}", serde_json::json!({"type": "oom", "id": id}))?;
        }
        oom_kills = Some(kills);
        let event = serde_json::json!({"type": "stats", "id": id, "data": stats});
        writeln!(stdout, "{event}")?;
        stdout.flush()?;
        if stats_once {
            return Ok(0);
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_follow_runc_units() {
        assert_eq!(parse_bytes("memory", "512").unwrap(), 512);
        assert_eq!(parse_bytes("memory", "64k").unwrap(), 65536);
        assert_eq!(parse_bytes("memory", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("memory", "2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_bytes("memory", "-1").unwrap(), -1);
        assert!(parse_bytes("memory", "lots").is_err());
    }

    #[test]
    fn intervals_are_go_durations() {
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_interval("5x").is_err());
    }

    #[test]
    fn update_flags_build_resources() {
        let args = UpdateArgs {
            memory: Some("100m".into()),
            cpu_quota: Some(50000),
            pids_limit: Some(10),
            id: "c".into(),
            ..Default::default()
        };
        let resources = update_resources(&args).unwrap();
        assert_eq!(
            resources.memory().as_ref().unwrap().limit(),
            Some(100 << 20)
        );
        assert_eq!(resources.cpu().as_ref().unwrap().quota(), Some(50000));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 10);
    }

    #[test]
    fn table_columns_align() {
        let rows = vec![
            vec!["ID".to_string(), "PID".to_string()],
            vec!["abc".to_string(), "1".to_string()],
        ];
        assert_eq!(table(&rows), "ID       PID\nabc      1\n");
    }
}
