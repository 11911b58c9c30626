//! `runtime-bench [--iterations N] [--runtime NAME=PATH]...`: full lifecycle
//! (create, start, wait for exit, delete) of a busybox `/bin/true` container,
//! then `exec` of `/bin/true` into a running container (what exec probes
//! cost), for several runc-compatible runtimes side by side on the same
//! bundle, iterations interleaved so that machine noise hits all alike.
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
    exec_samples: Vec<Duration>,
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
            exec_samples: Vec::new(),
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
    measure_exec(&mut contenders, iterations)?;
    report(&contenders, iterations);
    Ok(())
}

/// Times `exec /bin/true` into one running container per runtime.
fn measure_exec(contenders: &mut [Contender], iterations: usize) -> anyhow::Result<()> {
    let mut running = Vec::new();
    for contender in contenders.iter() {
        // Each container needs its own cgroup, hence its own bundle.
        let bundle = Bundle::busybox(Spec::new().args(&["sleep", "100000"]))?;
        let id = format!("bench-exec-{}-{}", contender.name, std::process::id());
        let path = path_str(bundle.path())?;
        run(contender, &["run", "--detach", "--bundle", path, &id])?;
        running.push((bundle, id));
    }
    let result = (|| {
        for _ in 0..iterations {
            for (contender, (_, id)) in contenders.iter_mut().zip(&running) {
                let started = Instant::now();
                run(contender, &["exec", id, "/bin/true"])?;
                contender.exec_samples.push(started.elapsed());
            }
        }
        anyhow::Ok(())
    })();
    for (contender, (_, id)) in contenders.iter().zip(&running) {
        let _ = runtime_command(contender, &["delete", "--force", id]).status();
    }
    result
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
    let lifecycle: Vec<Row> = contenders
        .iter()
        .map(|c| {
            let totals = c.samples.iter().map(|s| s.iter().sum()).collect();
            let phases: Vec<String> = (0..PHASES.len())
                .map(|phase| {
                    let times: Vec<Duration> = c.samples.iter().map(|s| s[phase]).collect();
                    format!("{:.2}", millis(Stats::of(times).median))
                })
                .collect();
            Row {
                name: &c.name,
                stats: Stats::of(totals),
                extra: phases.join(" / "),
            }
        })
        .collect();
    print_table(
        &lifecycle,
        &format!("median by phase: {}", PHASES.join(" / ")),
    );

    println!();
    println!("exec /bin/true into a running container, {iterations} interleaved iterations");
    let exec: Vec<Row> = contenders
        .iter()
        .map(|c| Row {
            name: &c.name,
            stats: Stats::of(c.exec_samples.clone()),
            extra: String::new(),
        })
        .collect();
    print_table(&exec, "");
}

struct Stats {
    median: Duration,
    p90: Duration,
    min: Duration,
    mean: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
        Self {
            median: percentile(&samples, 0.5),
            p90: percentile(&samples, 0.9),
            min: samples[0],
            mean,
        }
    }
}

struct Row<'a> {
    name: &'a str,
    stats: Stats,
    extra: String,
}

/// One line per runtime, then the first runtime's ratios to each other one.
fn print_table(rows: &[Row], extra_header: &str) {
    let header = format!(
        "{:<8} {:>10} {:>10} {:>10} {:>10}   {extra_header}",
        "runtime", "median ms", "p90 ms", "min ms", "mean ms"
    );
    println!("{}", header.trim_end());
    for row in rows {
        let Stats {
            median,
            p90,
            min,
            mean,
        } = &row.stats;
        let line = format!(
            "{:<8} {:>10.2} {:>10.2} {:>10.2} {:>10.2}   {}",
            row.name,
            millis(*median),
            millis(*p90),
            millis(*min),
            millis(*mean),
            row.extra
        );
        println!("{}", line.trim_end());
    }
    if let Some((first, others)) = rows.split_first() {
        for other in others {
            println!(
                "{}/{}: median {:.2}x, p90 {:.2}x",
                first.name,
                other.name,
                millis(first.stats.median) / millis(other.stats.median),
                millis(first.stats.p90) / millis(other.stats.p90)
            );
        }
    }
}
