//! cri-bench: drives CRI endpoints with the same Rust client and compares them
//! side by side in one run — berth-cri against Debian's containerd 1.6 + runc,
//! same busybox image from the same kind of local registry, same CNI plugins.
//!
//! 1. Pod start-up and teardown, interleaved iterations: RunPodSandbox +
//!    CreateContainer + StartContainer, then StopContainer + RemoveContainer +
//!    StopPodSandbox + RemovePodSandbox. Prints medians, also of each of the
//!    three start-up calls.
//! 2. Memory (skipped with `--pods 0`, a latency-only run): `--pods` pods
//!    with a running container each, then the summed
//!    VmRSS of the daemon and the processes it forked into its mount
//!    namespace (containerd's shims, berth-cri's supervisors; not the pods'
//!    pause processes), and their summed PSS, which counts pages shared
//!    between them once.
//!
//! berth-cri is a release build (`--berth-cri`, default target/release/berth-cri,
//! with berth-supervisor, berth-runtime and berth-pause next to it); both
//! endpoints execute the same CNI plugins (`--cni-bin-dir`, default the
//! workspace's release build in target/release).
//!
//! Usage: cri-bench [--iterations N] [--pods N] [--endpoints containerd,berth]
//!                  [--berth-cri PATH] [--cni-bin-dir DIR]
//! Runs as root; everything happens inside a network namespace it makes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_proto::runtime::v1::{
    RemoveContainerRequest, RemovePodSandboxRequest, StopContainerRequest, StopPodSandboxRequest,
};
use berth_tests::cri::{self, CriEnv, EndpointKind};

/// Exits 0 on SIGTERM, so stops measure the runtime, not a kill timeout.
const WORKLOAD: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];

const USAGE: &str = "usage: cri-bench [--iterations N] [--pods N] \
                     [--endpoints containerd,berth] [--berth-cri PATH] [--cni-bin-dir DIR]";

struct Options {
    iterations: usize,
    pods: usize,
    endpoints: Vec<EndpointKind>,
    berth_cri: PathBuf,
    cni_bin_dir: PathBuf,
}

fn parse_options() -> anyhow::Result<Options> {
    let release = berth_tests::bins::target_dir().join("release");
    let mut options = Options {
        iterations: 20,
        pods: 50,
        endpoints: vec![EndpointKind::Containerd, EndpointKind::Berth],
        berth_cri: release.join("berth-cri"),
        cni_bin_dir: release,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--iterations" => options.iterations = value()?.parse().context("--iterations")?,
            "--pods" => options.pods = value()?.parse().context("--pods")?,
            "--endpoints" => {
                options.endpoints = value()?
                    .split(',')
                    .map(|name| match name {
                        "containerd" => Ok(EndpointKind::Containerd),
                        "berth" => Ok(EndpointKind::Berth),
                        other => anyhow::bail!("--endpoints: unknown endpoint {other:?}"),
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            "--berth-cri" => options.berth_cri = value()?.into(),
            "--cni-bin-dir" => options.cni_bin_dir = value()?.into(),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    anyhow::ensure!(options.iterations > 0, "--iterations must be positive");
    // The CNI bin dir gets symlinks to the plugins: they must be absolute.
    options.cni_bin_dir = std::path::absolute(&options.cni_bin_dir).context("--cni-bin-dir")?;
    options.berth_cri = std::path::absolute(&options.berth_cri).context("--berth-cri")?;
    anyhow::ensure!(
        options.berth_cri.is_file() || !options.endpoints.contains(&EndpointKind::Berth),
        "{} is missing: cargo build --release -p berth-cri -p berth-cni --bins",
        options.berth_cri.display()
    );
    Ok(options)
}

/// Durations of one pod's start-up (and its three calls) and teardown.
struct PodTimes {
    start: StartTimes,
    teardown: Duration,
}

/// RunPodSandbox, CreateContainer and StartContainer of one pod.
#[derive(Clone, Copy, Default)]
struct StartTimes {
    run: Duration,
    create: Duration,
    start: Duration,
}

impl StartTimes {
    fn total(&self) -> Duration {
        self.run + self.create + self.start
    }
}

struct Pod {
    id: String,
    container: String,
}

async fn start_pod(env: &mut CriEnv, name: &str) -> anyhow::Result<(Pod, StartTimes)> {
    let pod_config = env.pod_config(name);
    let begin = Instant::now();
    let id = env.run_pod(&pod_config).await?;
    let ran = Instant::now();
    let config = env.container_config("app", WORKLOAD);
    let container = env.create_container(&id, &pod_config, config).await?;
    let created = Instant::now();
    env.start_container(&container).await?;
    let times = StartTimes {
        run: ran - begin,
        create: created - ran,
        start: created.elapsed(),
    };
    Ok((Pod { id, container }, times))
}

async fn teardown_pod(env: &mut CriEnv, pod: Pod) -> anyhow::Result<()> {
    env.runtime
        .stop_container(StopContainerRequest {
            container_id: pod.container.clone(),
            timeout: 10,
        })
        .await?;
    env.runtime
        .remove_container(RemoveContainerRequest {
            container_id: pod.container,
        })
        .await?;
    env.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await?;
    env.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.id,
        })
        .await?;
    Ok(())
}

async fn time_pod(env: &mut CriEnv, name: &str) -> anyhow::Result<PodTimes> {
    let (pod, start) = start_pod(env, name).await?;
    let started = Instant::now();
    teardown_pod(env, pod).await?;
    Ok(PodTimes {
        start,
        teardown: started.elapsed(),
    })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Results {
    kind: EndpointKind,
    start: Duration,
    /// Median of each call on its own (they need not add up to `start`).
    calls: StartTimes,
    teardown: Duration,
    rss_kib: u64,
    pss_kib: u64,
    processes: usize,
}

/// berth's pause processes stay in the daemon's mount namespace, but they
/// are the pods' own processes, as containerd's pause containers are (those
/// have a mount namespace of their own and are not counted): left out.
fn is_pause(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.file_name().is_some_and(|name| name == "berth-pause"))
}

/// RSS and PSS of the daemon and its shims/supervisors with `pods` pods running.
async fn measure_rss(env: &mut CriEnv, pods: usize) -> anyhow::Result<(u64, u64, usize)> {
    let mut running = Vec::with_capacity(pods);
    for n in 0..pods {
        running.push(start_pod(env, &format!("rss-{n}")).await?.0);
    }
    let runtime_processes: Vec<u32> = env
        .daemon
        .processes()
        .into_iter()
        .filter(|pid| !is_pause(*pid))
        .collect();
    let rss = runtime_processes.iter().map(|pid| cri::rss_kib(*pid)).sum();
    let pss = runtime_processes.iter().map(|pid| cri::pss_kib(*pid)).sum();
    let processes = runtime_processes.len();
    for pod in running {
        teardown_pod(env, pod).await?;
    }
    Ok((rss, pss, processes))
}

async fn bench(options: &Options) -> anyhow::Result<Vec<Results>> {
    let mut envs = Vec::new();
    for (instance, kind) in options.endpoints.iter().enumerate() {
        if *kind == EndpointKind::Berth {
            cri::require_berth_cri()?;
        }
        let mut env = CriEnv::start(*kind, instance as u8)
            .await
            .with_context(|| format!("starting {}", kind.name()))?;
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        // One warm-up pod each: first-use costs (snapshot of the image,
        // pause image pull) are not what the loop measures.
        time_pod(&mut env, "warm-up").await?;
        envs.push(env);
    }
    let mut times: Vec<Vec<PodTimes>> = envs.iter().map(|_| Vec::new()).collect();
    for iteration in 0..options.iterations {
        for (env, samples) in envs.iter_mut().zip(times.iter_mut()) {
            samples.push(time_pod(env, &format!("bench-{iteration}")).await?);
        }
    }
    let mut results = Vec::new();
    for (mut env, samples) in envs.into_iter().zip(times) {
        let (rss_kib, pss_kib, processes) = if options.pods == 0 {
            (0, 0, 0)
        } else {
            measure_rss(&mut env, options.pods).await?
        };
        results.push(Results {
            kind: env.kind(),
            start: median(samples.iter().map(|t| t.start.total()).collect()),
            calls: StartTimes {
                run: median(samples.iter().map(|t| t.start.run).collect()),
                create: median(samples.iter().map(|t| t.start.create).collect()),
                start: median(samples.iter().map(|t| t.start.start).collect()),
            },
            teardown: median(samples.iter().map(|t| t.teardown).collect()),
            rss_kib,
            pss_kib,
            processes,
        });
    }
    Ok(results)
}

fn report(options: &Options, results: &[Results]) {
    println!(
        "cri-bench: {} interleaved iterations, {} running pods for RSS",
        options.iterations, options.pods
    );
    println!(
        "berth-cri: {}; CNI plugins: {}",
        options.berth_cri.display(),
        options.cni_bin_dir.display()
    );
    println!(
        "{:<12} {:>22} {:>14} {:>24} {:>10}",
        "endpoint", "run+create+start (ms)", "teardown (ms)", "daemon+shims RSS (MiB)", "PSS (MiB)"
    );
    for r in results {
        println!(
            "{:<12} {:>22.1} {:>14.1} {:>24.1} {:>10.1}  ({} processes)",
            r.kind.name(),
            ms(r.start),
            ms(r.teardown),
            r.rss_kib as f64 / 1024.0,
            r.pss_kib as f64 / 1024.0,
            r.processes
        );
    }
    println!(
        "{:<12} {:>14} {:>17} {:>16}",
        "endpoint", "run pod (ms)", "create ctr (ms)", "start ctr (ms)"
    );
    for r in results {
        println!(
            "{:<12} {:>14.1} {:>17.1} {:>16.1}",
            r.kind.name(),
            ms(r.calls.run),
            ms(r.calls.create),
            ms(r.calls.start)
        );
    }
    let find = |kind| results.iter().find(|r| r.kind == kind);
    if let (Some(berth), Some(containerd)) =
        (find(EndpointKind::Berth), find(EndpointKind::Containerd))
    {
        print!(
            "berth/containerd: start {:.3}, teardown {:.3}",
            ms(berth.start) / ms(containerd.start),
            ms(berth.teardown) / ms(containerd.teardown),
        );
        if options.pods > 0 {
            print!(
                ", RSS {:.3}, PSS {:.3}",
                berth.rss_kib as f64 / containerd.rss_kib as f64,
                berth.pss_kib as f64 / containerd.pss_kib as f64
            );
        }
        println!();
    }
}

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    // The fixtures read these: set before any thread exists.
    // SAFETY: still single-threaded here.
    unsafe {
        std::env::set_var(cri::BINARY_VAR, &options.berth_cri);
        std::env::set_var(cri::CNI_BIN_DIR_VAR, &options.cni_bin_dir);
    }
    let netns = cri::enter_test_netns()?;
    // Built after setns: its threads inherit the bench's netns.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = runtime.block_on(bench(&options))?;
    drop(runtime);
    drop(netns);
    report(&options, &results);
    Ok(())
}
