//! Our client against a real CRI server: Debian's containerd (1.6, CRI
//! plugin serving runtime.v1) on a private socket, root and state dir.
//!
//! Needs root (containerd's snapshotter and cgroup setup). The daemon gets
//! its own config under a temp dir, pointing CNI at empty dirs, and is
//! killed by PID when the test ends, also on failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use berth_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_proto::runtime::v1::*;
use berth_proto::{connect_unix, image_client, runtime_client};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tonic::Code;
use tonic::transport::Channel;

const CONTAINERD: &str = "/usr/bin/containerd";
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// A containerd process with everything it writes under one temp dir.
/// Dropping it kills the process (by PID) and removes the dir.
struct Containerd {
    child: Child,
    socket: PathBuf,
    root: PathBuf,
    cni_conf_dir: PathBuf,
    // Dropped last: the process must be gone before its files.
    dir: tempfile::TempDir,
}

impl Containerd {
    async fn start() -> anyhow::Result<Containerd> {
        let dir = tempfile::Builder::new().prefix("berth-ctrd").tempdir()?;
        let base = dir.path();
        let socket = base.join("containerd.sock");
        let root = base.join("root");
        let cni_conf_dir = base.join("cni/net.d");
        let cni_bin_dir = base.join("cni/bin");
        std::fs::create_dir_all(&cni_conf_dir)?;
        std::fs::create_dir_all(&cni_bin_dir)?;
        let config = base.join("config.toml");
        std::fs::write(
            &config,
            config_toml(base, &socket, &root, &cni_conf_dir, &cni_bin_dir),
        )?;

        let mut child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {CONTAINERD}"))?;
        let stderr = child.stderr.take().context("containerd stderr")?;
        let mut containerd = Containerd {
            child,
            socket,
            root,
            cni_conf_dir,
            dir,
        };

        // containerd logs "serving... address=<socket>" once the socket
        // accepts connections; wait for that line, not for a fixed time.
        let ready_line = format!("address={}", containerd.socket.display());
        let mut lines = BufReader::new(stderr).lines();
        let mut log_file = tokio::fs::File::create(containerd.log_path()).await?;
        let waited = tokio::time::timeout(STARTUP_DEADLINE, async {
            while let Some(line) = lines.next_line().await? {
                log_file.write_all(format!("{line}\n").as_bytes()).await?;
                if line.contains("msg=serving...") && line.ends_with(&ready_line) {
                    return Ok(true);
                }
            }
            anyhow::Ok(false)
        })
        .await;
        match waited {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!(
                "containerd exited before serving: {:?}\n{}",
                containerd.child.wait().await?,
                containerd.log_tail()
            ),
            Ok(Err(e)) => return Err(e.context("reading containerd's log")),
            Err(_) => bail!(
                "containerd did not serve {} within {STARTUP_DEADLINE:?}\n{}",
                containerd.socket.display(),
                containerd.log_tail()
            ),
        }
        // Keep draining its log so a full pipe never blocks the daemon.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if log_file
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(containerd)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills the daemon by its PID and reaps it.
    async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing containerd")?;
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // After a failed test: kill by PID; `kill_on_drop` reaps it.
        let _ = self.child.start_kill();
    }
}

/// Only what the CRI plugin needs; every path inside `base`. Snapshotters
/// that probe the host, tracing and the /opt installer are left out.
fn config_toml(base: &Path, socket: &Path, root: &Path, cni_conf: &Path, cni_bin: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.internal.v1.opt",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"#,
        root = root.display(),
        state = base.join("state").display(),
        socket = socket.display(),
        cni_bin = cni_bin.display(),
        cni_conf = cni_conf.display(),
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| {
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The CRI plugin starts its service just after the socket is up and
/// answers "not initialized" until then; retry Version on exactly that,
/// within the deadline.
async fn version_when_initialized(
    client: &mut RuntimeServiceClient<Channel>,
) -> anyhow::Result<VersionResponse> {
    let deadline = tokio::time::Instant::now() + STARTUP_DEADLINE;
    loop {
        let request = VersionRequest {
            version: "v1".into(),
        };
        match client.version(request).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status)
                if status.message().contains("not initialized")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::task::yield_now().await
            }
            Err(status) => return Err(status.into()),
        }
    }
}

#[tokio::test]
async fn our_client_talks_to_containerd_cri() -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("skipped: starting containerd needs root");
        return Ok(());
    }
    let containerd = Containerd::start().await?;
    let channel = connect_unix(&containerd.socket).await?;
    let mut runtime = runtime_client(channel.clone());
    let mut images = image_client(channel);

    let version = version_when_initialized(&mut runtime).await?;
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    assert!(
        version.runtime_version.starts_with("1."),
        "{}",
        version.runtime_version
    );

    // No CNI config: runtime ready, network not.
    let status = runtime
        .status(StatusRequest { verbose: true })
        .await?
        .into_inner();
    let conditions = status.status.context("no runtime status")?.conditions;
    let condition = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.r#type == kind)
            .with_context(|| format!("no {kind} condition in {conditions:?}"))
    };
    ensure!(condition("RuntimeReady")?.status, "{conditions:?}");
    let network = condition("NetworkReady")?;
    ensure!(!network.status, "{conditions:?}");
    ensure!(!network.reason.is_empty(), "{network:?}");
    // The verbose info map carries containerd's config as JSON.
    let config = status.info.get("config").context("no config in info")?;
    ensure!(
        config.contains(&*containerd.cni_conf_dir.to_string_lossy()),
        "{config}"
    );

    let listed = images
        .list_images(ListImagesRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.images, vec![], "fresh image store");
    let absent = images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: "docker.io/library/absent:1".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner();
    assert_eq!(absent.image, None, "absent image is not an error");

    let sandboxes = runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner();
    assert_eq!(sandboxes.items, vec![]);
    let containers = runtime
        .list_containers(ListContainersRequest::default())
        .await?
        .into_inner();
    assert_eq!(containers.containers, vec![]);
    let missing = runtime
        .container_status(ContainerStatusRequest {
            container_id: "does-not-exist".into(),
            verbose: false,
        })
        .await
        .expect_err("unknown container");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let fs_info = images
        .image_fs_info(ImageFsInfoRequest {})
        .await?
        .into_inner();
    let image_fs = fs_info
        .image_filesystems
        .first()
        .context("no image filesystem")?;
    assert!(image_fs.timestamp > 0);
    let mountpoint = &image_fs.fs_id.as_ref().context("no fs_id")?.mountpoint;
    assert!(
        Path::new(mountpoint).starts_with(&containerd.root),
        "{mountpoint} outside {}",
        containerd.root.display()
    );
    assert!(image_fs.used_bytes.is_some() && image_fs.inodes_used.is_some());

    // Without a CNI config template containerd only records the CIDR.
    runtime
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: "10.244.0.0/24".into(),
                }),
            }),
        })
        .await?;

    // RuntimeConfig arrived after containerd 1.6; newer ones answer it.
    match runtime.runtime_config(RuntimeConfigRequest {}).await {
        Ok(response) => {
            let linux = response.into_inner().linux.context("no linux config")?;
            assert!(CgroupDriver::try_from(linux.cgroup_driver).is_ok());
        }
        Err(status) => assert_eq!(status.code(), Code::Unimplemented, "{status:?}"),
    }

    containerd.stop().await
}
