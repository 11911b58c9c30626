//! `image-bench`: pull + unpack of a multi-layer image (>= 100 MiB) from a local
//! registry, berth against containerd (`ctr image pull --plain-http`), alternating runs,
//! each from empty stores. Reports median wall time and peak RSS of each side.
//!
//! Run: cargo build --release -p berth-tests --bins &&
//!      target/release/image-bench [--runs N]
//! (`--serve` only pushes the image and keeps the registry up, for profiling by hand.)
//!
//! berth runs as `berth-image-pull` (a fresh process; peak RSS from wait4). containerd
//! runs on temp root/state/socket dirs inside its own mount namespace (`unshare -m`), so
//! its snapshot mounts never reach the host; its peak RSS is the daemon's VmHWM plus
//! the ctr client's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_tests::mountns::private_mount_ns_command;
use berth_tests::registry::{
    ImageBuilder, LayerBuilder, LayerCompression, Registry, RegistryOptions, busybox_layer,
    pseudo_random_bytes,
};

const MIB: usize = 1 << 20;

fn main() -> anyhow::Result<()> {
    let (runs, serve) = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => (5, false),
        [flag, n] if flag == "--runs" => (n.parse()?, false),
        [flag] if flag == "--serve" => (0, true),
        [flag, host] if flag == "--push" => return push_image(host),
        other => bail!("usage: image-bench [--runs N | --serve], got {other:?}"),
    };
    let exe = std::env::current_exe()?;
    let puller = exe.parent().context("exe dir")?.join("berth-image-pull");
    if !puller.exists() {
        bail!(
            "{} missing: cargo build --release -p berth-tests --bins",
            puller.display()
        );
    }
    let registry = Registry::start(RegistryOptions::default())?;
    // Built and pushed by a child process: a forked child's peak RSS starts at its
    // parent's, so this process must stay small for the measured ones.
    let status = Command::new(&exe)
        .arg("--push")
        .arg(registry.host())
        .status()?;
    if !status.success() {
        bail!("building and pushing the image failed: {status}");
    }
    let reference = format!("{}/bench/big:v1", registry.host());
    if serve {
        // For profiling by hand: keep the registry up until stdin closes.
        println!(
            "serving; hosts.toml: server = \"{}\"; press Enter to stop",
            registry.url()
        );
        std::io::stdin().read_line(&mut String::new())?;
        return Ok(());
    }
    let work = tempfile::Builder::new()
        .prefix("berth-image-bench-")
        .tempdir()?;
    registry.write_hosts_toml(&work.path().join("hosts"))?;
    let (mut berth, mut containerd) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // Alternate who goes first, so neither always meets a warmer page cache.
        if run % 2 == 0 {
            berth.push(run_berth(&puller, work.path(), run, &reference)?);
            containerd.push(run_containerd(work.path(), run, &reference)?);
        } else {
            containerd.push(run_containerd(work.path(), run, &reference)?);
            berth.push(run_berth(&puller, work.path(), run, &reference)?);
        }
        println!(
            "run {run}: berth {:.3}s {} MiB | containerd {:.3}s {} MiB",
            berth[run].0.as_secs_f64(),
            berth[run].1 / 1024,
            containerd[run].0.as_secs_f64(),
            containerd[run].1 / 1024
        );
    }
    report("berth (berth-image-pull)", &berth);
    report("containerd 1.6 (ctr image pull --plain-http)", &containerd);
    Ok(())
}

fn push_image(registry_host: &str) -> anyhow::Result<()> {
    let image = build_image();
    let total: usize = image.layers.iter().map(|l| l.blob.len()).sum();
    let pusher = berth_tests::registry::Pusher::new(
        registry_host,
        true,
        None,
        oci_client::secrets::RegistryAuth::Anonymous,
    );
    tokio::runtime::Runtime::new()?.block_on(pusher.push_image("bench/big", "v1", &image))?;
    println!(
        "image {registry_host}/bench/big:v1: {} layers, {:.1} MiB compressed",
        image.layers.len(),
        total as f64 / MIB as f64
    );
    Ok(())
}

/// busybox, many small files, incompressible and compressible data: ~120 MiB unpacked.
fn build_image() -> berth_tests::registry::BuiltImage {
    let mut small = busybox_layer();
    for i in 0..3000u64 {
        let len = 1024 + (i as usize * 37) % (15 * 1024);
        small = small.file(
            format!("usr/share/small/{}/{i}", i % 50),
            pseudo_random_bytes(i, len),
            0o644,
        );
    }
    let random = |seed: u64, files: usize, each: usize| {
        let mut l = LayerBuilder::new();
        for f in 0..files {
            l = l.file(
                format!("opt/random{seed}/{f}.bin"),
                pseudo_random_bytes(seed * 100 + f as u64, each),
                0o644,
            );
        }
        l.build(LayerCompression::Gzip)
    };
    let text: Vec<u8> = (0..30 * MIB / 64)
        .flat_map(|i| {
            format!("{i:016x} line of fairly compressible log text.........\n").into_bytes()
        })
        .collect();
    let compressible = LayerBuilder::new()
        .file("var/log/big.log", text.clone(), 0o644)
        .file("var/log/copy.log", text, 0o644)
        .build(LayerCompression::Gzip);
    ImageBuilder::new()
        .layer(small.build(LayerCompression::Gzip))
        .layer(random(1, 4, 10 * MIB))
        .layer(compressible)
        .layer(random(2, 5, 5 * MIB))
        .layer(
            LayerBuilder::new()
                .file("etc/bench", "v1", 0o644)
                .build(LayerCompression::Gzip),
        )
        .build()
}

/// Runs a command to completion; returns wall time and its peak RSS in KiB (wait4).
fn timed(cmd: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let child = cmd.stdout(Stdio::null()).spawn()?;
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child; pointers are valid for the call.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let elapsed = start.elapsed();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed with status {status}");
    }
    Ok((elapsed, usage.ru_maxrss as u64))
}

fn run_berth(
    puller: &Path,
    work: &Path,
    run: usize,
    reference: &str,
) -> anyhow::Result<(Duration, u64)> {
    let root = work.join(format!("berth-{run}"));
    let result = timed(
        Command::new(puller)
            .arg("--root")
            .arg(&root)
            .arg("--hosts-dir")
            .arg(work.join("hosts"))
            .arg(reference),
    );
    std::fs::remove_dir_all(&root)?;
    result
}

/// containerd on temp dirs, killed by PID when dropped.
struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_containerd(dir: &Path) -> anyhow::Result<Containerd> {
    std::fs::create_dir_all(dir)?;
    let socket = dir.join("containerd.sock");
    let config = format!(
        "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = socket.display(),
    );
    std::fs::write(dir.join("config.toml"), config)?;
    let log = std::fs::File::create(dir.join("containerd.log"))?;
    let child = private_mount_ns_command("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start containerd")?;
    let daemon = Containerd { child, socket };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctr(&daemon.socket)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success()
    {
        if Instant::now() > deadline {
            bail!("containerd did not answer on {}", daemon.socket.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(daemon)
}

fn ctr(socket: &Path) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address")
        .arg(socket)
        .args(["--namespace", "bench"]);
    c
}

fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM of containerd")
}

fn run_containerd(work: &Path, run: usize, reference: &str) -> anyhow::Result<(Duration, u64)> {
    let dir = work.join(format!("containerd-{run}"));
    let result = (|| {
        let daemon = start_containerd(&dir)?;
        let (elapsed, client_rss) =
            timed(ctr(&daemon.socket).args(["image", "pull", "--plain-http", reference]))?;
        let daemon_rss = vm_hwm_kib(daemon.child.id())?;
        Ok((elapsed, daemon_rss + client_rss))
    })();
    // The daemon is gone (dropped above); its mounts died with its namespace.
    std::fs::remove_dir_all(&dir)?;
    result
}

fn report(name: &str, samples: &[(Duration, u64)]) {
    let mut times: Vec<f64> = samples.iter().map(|s| s.0.as_secs_f64()).collect();
    let mut rss: Vec<u64> = samples.iter().map(|s| s.1).collect();
    times.sort_by(f64::total_cmp);
    rss.sort();
    println!(
        "{name}: median {:.3}s (min {:.3}s, max {:.3}s), median peak RSS {:.1} MiB",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        rss[rss.len() / 2] as f64 / 1024.0
    );
}
