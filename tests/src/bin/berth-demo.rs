//! berth-demo: what `scripts/run-node` runs until the kubelet exists. It
//! starts berth-cri with the workspace's CNI plugins (a bridge conflist in
//! its own dirs), loads a busybox image from a local archive (no registry),
//! runs a pod with a busybox httpd container through the CRI API, prints the
//! pod's IP and the answer of one HTTP request to it, and on Ctrl-C (SIGINT
//! or SIGTERM) removes the pod, stops the daemon and deletes everything it
//! made. Everything happens in a network namespace of its own and the daemon
//! in a private mount namespace, so the host's network and mounts stay as
//! they are.
//!
//! Usage: berth-demo [--dir DIR] [--berth-cri PATH] [--cni-bin-dir DIR] [--once]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_proto::runtime::v1::{
    CreateContainerRequest, PodSandboxConfig, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use berth_tests::cri::{self, Daemon, DaemonLayout, EndpointKind};
use berth_tests::image::ImageBuilder;

const IMAGE: &str = "docker.io/library/busybox:demo";
const PORT: u16 = 8080;
const PAGE: &str = "hello from a berth pod\n";
const HTTP_DEADLINE: Duration = Duration::from_secs(30);

struct Options {
    dir: PathBuf,
    berth_cri: PathBuf,
    cni_bin_dir: PathBuf,
    once: bool,
}

const USAGE: &str = "usage: berth-demo [--dir DIR] [--berth-cri PATH] [--cni-bin-dir DIR] [--once]

  --dir DIR          private state dir, removed on exit [default: /run/berth-demo]
  --berth-cri PATH   the daemon [default: target/release/berth-cri]
  --cni-bin-dir DIR  where the bridge, host-local, loopback and portmap plugins are
                     [default: target/release]
  --once             exit (and clean up) right after printing the answer";

fn parse_options() -> anyhow::Result<Options> {
    let release = berth_tests::bins::target_dir().join("release");
    let mut options = Options {
        dir: PathBuf::from("/run/berth-demo"),
        berth_cri: release.join("berth-cri"),
        cni_bin_dir: release,
        once: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .map(PathBuf::from)
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--dir" => options.dir = value()?,
            "--berth-cri" => options.berth_cri = value()?,
            "--cni-bin-dir" => options.cni_bin_dir = value()?,
            "--once" => options.once = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    // The CNI bin dir gets symlinks to the plugins: they must be absolute.
    options.cni_bin_dir = std::path::absolute(&options.cni_bin_dir).context("--cni-bin-dir")?;
    options.berth_cri = std::path::absolute(&options.berth_cri).context("--berth-cri")?;
    options.dir = std::path::absolute(&options.dir).context("--dir")?;
    Ok(options)
}

/// Writes the busybox image as an OCI layout tar and imports it into the
/// image store the daemon will open (before it runs, so no lock is shared).
async fn import_image(dir: &Path, root: &Path) -> anyhow::Result<()> {
    let layout = dir.join("image-layout");
    ImageBuilder::busybox()?
        .build()?
        .write_layout(&layout, IMAGE)?;
    let archive = dir.join("busybox-demo.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&archive)?);
    tar.append_dir_all(".", &layout)?;
    tar.into_inner()?.sync_all()?;
    let store = berth_cri::image::ImageStore::open(root, Default::default())?;
    let images = store
        .import(&archive, None)
        .await
        .with_context(|| format!("importing {}", archive.display()))?;
    anyhow::ensure!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|n| n == IMAGE)),
        "the archive did not yield {IMAGE}"
    );
    std::fs::remove_dir_all(&layout)?;
    std::fs::remove_file(&archive)?;
    println!("image:     {IMAGE} (imported from a local archive)");
    Ok(())
}

fn pod_config(dir: &Path, cgroup_parent: &str) -> PodSandboxConfig {
    cri::pod_config("web", &dir.join("logs"), cgroup_parent)
}

/// One `GET /` to the pod, retried until httpd listens; the whole answer.
fn http_get(ip: IpAddr) -> anyhow::Result<String> {
    let deadline = Instant::now() + HTTP_DEADLINE;
    let address = SocketAddr::new(ip, PORT);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })();
        match attempt {
            Ok(answer) => return Ok(answer),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("GET http://{address}/"));
            }
            // The container may still be starting httpd.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs the pod; returns its id (recorded before anything can fail after it).
async fn run_pod(
    daemon: &Daemon,
    config: &PodSandboxConfig,
    pod: &mut Option<String>,
) -> anyhow::Result<()> {
    let mut runtime = berth_proto::runtime_client(daemon.connect().await?);
    let id = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    *pod = Some(id.clone());
    let script = format!(
        "mkdir -p /www && printf '{}' > /www/index.html && exec httpd -f -p {PORT} -h /www",
        PAGE.replace('\n', "\\n")
    );
    let container = runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(cri::container_config(
                "httpd",
                IMAGE,
                &["sh", "-c", &script],
            )),
            sandbox_config: Some(config.clone()),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    runtime
        .start_container(StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .context("StartContainer")?;
    let status = runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .context("PodSandboxStatus")?
        .into_inner();
    let ip: IpAddr = status
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default()
        .parse()
        .context("the pod has no IP")?;
    println!("pod:       {id}");
    println!("container: {container} (busybox httpd on port {PORT})");
    println!("pod IP:    {ip}");
    let answer = tokio::task::spawn_blocking(move || http_get(ip)).await??;
    println!("GET http://{ip}:{PORT}/ answered:");
    for line in answer.lines() {
        println!("  | {line}");
    }
    Ok(())
}

async fn remove_pod(daemon: &Daemon, id: &str) -> anyhow::Result<()> {
    let mut runtime = berth_proto::runtime_client(daemon.connect().await?);
    runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .context("StopPodSandbox")?;
    runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .context("RemovePodSandbox")?;
    Ok(())
}

/// SIGINT and SIGTERM, caught from the start so that a Ctrl-C during the
/// set-up still cleans up (once the pod runs).
struct Interrupts {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn catch() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Interrupts {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

async fn demo(options: &Options, interrupts: Interrupts) -> anyhow::Result<()> {
    let dir = &options.dir;
    let (cni_conf_dir, cni_bin_dir) = cri::write_cni(dir, 0)?;
    let daemon_dir = dir.join("daemon");
    std::fs::create_dir_all(&daemon_dir)?;
    import_image(dir, &daemon_dir.join("root")).await?;
    let layout = DaemonLayout {
        socket: daemon_dir.join("cri.sock"),
        dir: daemon_dir,
        cni_conf_dir,
        cni_bin_dir,
        registry_config_dir: dir.join("certs.d"),
        pause_image: String::new(),
        extra_flags: Vec::new(),
    };
    let mut daemon = Daemon::start(EndpointKind::Berth, layout)
        .await
        .context("starting berth-cri")?;
    println!(
        "berth-cri: pid {} ({}), socket {}",
        daemon.pid(),
        options.berth_cri.display(),
        daemon.socket().display()
    );
    let cgroup_parent = format!("/{}", berth_tests::unique_name("berth-demo"));
    println!("cgroups:   {cgroup_parent}");
    let config = pod_config(dir, &cgroup_parent);
    let mut pod = None;
    let mut result = run_pod(&daemon, &config, &mut pod).await;
    if result.is_ok() && !options.once {
        println!("running; press Ctrl-C to stop");
        interrupts.wait().await;
    }
    println!("cleaning up");
    if let Some(id) = &pod
        && let Err(e) = remove_pod(&daemon, id).await
    {
        eprintln!("berth-demo: removing pod {id}: {e:#}");
        result = result.and(Err(e));
    }
    // The daemon's mounts live in its private mount namespace: they go with it.
    daemon.terminate().await?;
    berth_tests::cgroup::remove(&cgroup_parent);
    result
}

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "berth-demo must run as root (namespaces, cgroups)"
    );
    anyhow::ensure!(
        options.berth_cri.is_file(),
        "{} is missing: build it with `cargo build --release -p berth-cri --bins`",
        options.berth_cri.display()
    );
    // The fixtures read these: set before any thread exists.
    // SAFETY: still single-threaded here.
    unsafe {
        std::env::set_var(cri::BINARY_VAR, &options.berth_cri);
        std::env::set_var(cri::CNI_BIN_DIR_VAR, &options.cni_bin_dir);
    }
    // A run that was killed hard left its dir behind; its daemon is gone.
    if options.dir.exists() {
        std::fs::remove_dir_all(&options.dir)
            .with_context(|| format!("removing the leftovers in {}", options.dir.display()))?;
    }
    std::fs::create_dir_all(&options.dir)?;
    let netns = cri::enter_test_netns()?;
    println!("netns:     {}", netns.name());
    // Built after setns: its threads inherit the demo's netns.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async { demo(&options, Interrupts::catch()?).await });
    drop(runtime);
    drop(netns);
    let removed = std::fs::remove_dir_all(&options.dir)
        .with_context(|| format!("removing {}", options.dir.display()));
    result.and(removed)?;
    println!(
        "done: pod removed, daemon stopped, {} removed",
        options.dir.display()
    );
    Ok(())
}
