//! `runtime-bench [--iterations N] [--runtime NAME=PATH]...`: full lifecycle
//! (create, start, wait for exit, delete) of a busybox `/bin/true` container,
//! for several runc-compatible runtimes side by side on the same bundle,
//! iterations interleaved so that machine noise hits all alike.
//!
//! Defaults compare target/release/berth-runtime, /usr/sbin/runc and
//! /usr/bin/crun. Exit is observed by reaping the container init: this
//! process is a child subreaper, so the init (whose parent, the runtime's
//! `create`, has exited) is reparented to us and `waitpid` on the PID from
//! `--pid-file` returns when it exits.

use anyhow::{Context, bail};
use berth_tests::bundle::{Bundle, Spec};
use berth_tests::tempdir::TempDir;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Contender {
    name: String,
    binary: PathBuf,
    root: TempDir,
    /// Per iteration: create, start, wait, delete.
    samples: Vec<[Duration; 4]>,
}

fn main() -> anyhow::Result<()> {
    let (iterations, runtimes) = parse_args()?;
    nix::sys::prctl::set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER)")?;
    if runtimes.iter().any(|(name, _)| name == "crun") {
        bind_hugetlb_to_v1()?;
    }
    let mut contenders = Vec::new();
    for (name, binary) in runtimes {
        if !binary.exists() {
            bail!("{name}: {} not found", binary.display());
        }
        contenders.push(Contender {
            name,
            binary,
            root: TempDir::new("berth-bench-root")?,
            samples: Vec::new(),
        });
    }
    let bundle = Bundle::busybox(Spec::new().args(&["/bin/true"]))?;

    // One untimed round warms caches (binaries, rootfs pages).
    for contender in &contenders {
        lifecycle(contender, &bundle, "warmup")?;
    }
    for iteration in 0..iterations {
        for contender in &mut contenders {
            let elapsed = lifecycle(contender, &bundle, &iteration.to_string())?;
            contender.samples.push(elapsed);
        }
    }
    report(&contenders, iterations);
    Ok(())
}

fn parse_args() -> anyhow::Result<(usize, Vec<(String, PathBuf)>)> {
    let usage = "usage: runtime-bench [--iterations N] [--runtime NAME=PATH]...";
    let mut iterations = 50;
    let mut runtimes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" => iterations = args.next().context(usage)?.parse().context(usage)?,
            "--runtime" => {
                let value = args.next().context(usage)?;
                let (name, path) = value.split_once('=').context(usage)?;
                runtimes.push((name.to_string(), PathBuf::from(path)));
            }
            _ => bail!("unknown argument {arg:?}\n{usage}"),
        }
    }
    anyhow::ensure!(iterations > 0, "--iterations must be at least 1");
    if runtimes.is_empty() {
        let berth = berth_tests::bins::target_dir().join("release/berth-runtime");
        runtimes = vec![
            ("berth".to_string(), berth),
            ("runc".to_string(), PathBuf::from("/usr/sbin/runc")),
            ("crun".to_string(), PathBuf::from("/usr/bin/crun")),
        ];
    }
    Ok((iterations, runtimes))
}

/// Debian's crun refuses hybrid cgroups while hugetlb sits on the cgroup2
/// mount; binding it to a v1 hierarchy (once per boot) lets it run.
fn bind_hugetlb_to_v1() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/hugetlb"))
    {
        return Ok(());
    }
    eprintln!("binding the hugetlb controller to /sys/fs/cgroup/hugetlb for crun");
    std::fs::create_dir_all("/sys/fs/cgroup/hugetlb")?;
    let status = Command::new("mount")
        .args([
            "-t",
            "cgroup",
            "-o",
            "hugetlb",
            "cgroup",
            "/sys/fs/cgroup/hugetlb",
        ])
        .status()?;
    anyhow::ensure!(
        status.success(),
        "mounting the hugetlb cgroup hierarchy failed"
    );
    Ok(())
}

fn runtime_command(contender: &Contender, args: &[&str]) -> Command {
    let mut command = Command::new(&contender.binary);
    command.arg("--root").arg(contender.root.path()).args(args);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

fn run(contender: &Contender, args: &[&str]) -> anyhow::Result<()> {
    let status = runtime_command(contender, args).status()?;
    anyhow::ensure!(
        status.success(),
        "{} {} failed: {status}",
        contender.name,
        args.join(" ")
    );
    Ok(())
}

const PHASES: [&str; 4] = ["create", "start", "wait", "delete"];

/// create, start, reap the init, delete: the time a container engine spends
/// on one short-lived container, by phase.
fn lifecycle(
    contender: &Contender,
    bundle: &Bundle,
    suffix: &str,
) -> anyhow::Result<[Duration; 4]> {
    let id = format!("bench-{}-{}-{suffix}", contender.name, std::process::id());
    let timed = timed_lifecycle(contender, bundle, &id);
    if timed.is_err() {
        // Leave no container behind when a step failed.
        let _ = runtime_command(contender, &["delete", "--force", &id]).status();
    }
    berth_tests::cgroup::remove(&format!("/{id}"));
    timed
}

fn timed_lifecycle(
    contender: &Contender,
    bundle: &Bundle,
    id: &str,
) -> anyhow::Result<[Duration; 4]> {
    let pid_file = contender.root.join(format!("{id}.pid"));
    let bundle_path = path_str(bundle.path())?;
    let mut phase_started = Instant::now();
    let mut lap = || {
        let now = Instant::now();
        let phase = now - phase_started;
        phase_started = now;
        phase
    };
    let pid_path = path_str(&pid_file)?;
    run(
        contender,
        &[
            "create",
            "--bundle",
            bundle_path,
            "--pid-file",
            pid_path,
            id,
        ],
    )?;
    let pid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let create = lap();
    run(contender, &["start", id])?;
    let start = lap();
    waitpid(Pid::from_raw(pid), None).with_context(|| format!("waiting for {id}'s init {pid}"))?;
    let wait = lap();
    run(contender, &["delete", id])?;
    let delete = lap();
    Ok([create, start, wait, delete])
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(contenders: &[Contender], iterations: usize) {
    println!(
        "container lifecycle (create, start, wait, delete) of /bin/true, {iterations} interleaved iterations"
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10}   median by phase: {}",
        "runtime",
        "median ms",
        "p90 ms",
        "min ms",
        "mean ms",
        PHASES.join(" / ")
    );
    let mut summaries = Vec::new();
    for contender in contenders {
        let mut totals: Vec<Duration> = contender.samples.iter().map(|s| s.iter().sum()).collect();
        totals.sort();
        let mean = totals.iter().sum::<Duration>() / totals.len().max(1) as u32;
        let (median, p90) = (percentile(&totals, 0.5), percentile(&totals, 0.9));
        let phases: Vec<String> = (0..PHASES.len())
            .map(|phase| {
                let mut times: Vec<Duration> = contender.samples.iter().map(|s| s[phase]).collect();
                times.sort();
                format!("{:.2}", millis(percentile(&times, 0.5)))
            })
            .collect();
        println!(
            "{:<8} {:>10.2} {:>10.2} {:>10.2} {:>10.2}   {}",
            contender.name,
            millis(median),
            millis(p90),
            millis(totals[0]),
            millis(mean),
            phases.join(" / ")
        );
        summaries.push((contender.name.as_str(), median, p90));
    }
    if let Some((first, first_median, first_p90)) = summaries.first() {
        for (other, median, p90) in &summaries[1..] {
            println!(
                "{first}/{other}: median {:.2}x, p90 {:.2}x",
                millis(*first_median) / millis(*median),
                millis(*first_p90) / millis(*p90)
            );
        }
    }
}
