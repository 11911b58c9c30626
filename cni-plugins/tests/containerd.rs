//! Debian's containerd drives our plugins: `ctr run --cni` sets containers
//! up through containerd's own CNI library (go-cni over libcni), the same
//! path its CRI plugin takes. containerd, its state and the "host" all live
//! in a test netns and temp dirs; ctr runs in a private mount namespace in
//! which /etc (overlay) and /opt (tmpfs) hold the CNI config and our bin dir.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};

/// A containerd daemon inside the test netns; killed on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
    /// A containerd namespace of this test alone: runc keeps its state
    /// per namespace under /run/containerd/runc.
    namespace: String,
}

impl Containerd {
    fn start(netns: &TestNetns, dir: &Path) -> Self {
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
                dir.join("root").display(),
                dir.join("state").display(),
                socket.display(),
                dir.join("opt").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path()))
            .args(["containerd", "--config"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let d = Containerd {
            child,
            socket,
            dir: dir.to_path_buf(),
            namespace: unique("berth-cni-"),
        };
        assert!(
            wait_for(Duration::from_secs(20), || d
                .ctr(&["version"])
                .status
                .success()),
            "containerd did not come up"
        );
        d
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", &self.namespace])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks outlive containerd (their shims are separate processes):
        // stop and delete them first.
        let tasks = String::from_utf8_lossy(&self.ctr(&["task", "ls", "-q"]).stdout).into_owned();
        for id in tasks.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
            wait_for(Duration::from_secs(10), || {
                self.ctr(&["task", "delete", id]).status.success()
            });
            let _ = self.ctr(&["containers", "delete", id]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // runc keeps per-namespace state on the host and containerd makes a
        // cgroup per namespace in every hierarchy: remove both.
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.namespace));
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(hierarchy.path().join(&self.namespace));
        }
        // ctr's libcni caches its ADD results on the host, named after the
        // namespaced container id.
        let marker = format!("-{}-", self.namespace);
        let results = std::fs::read_dir("/var/lib/cni/results");
        for entry in results.into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().contains(&marker) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        // Snapshots and task rootfs stay mounted under the state dirs.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}/[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
    }
}

fn blob(dir: &Path, data: &[u8]) -> (String, usize) {
    let digest = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    std::fs::write(dir.join("blobs/sha256").join(&digest), data).unwrap();
    (format!("sha256:{digest}"), data.len())
}

/// An OCI image archive holding busybox, whose entrypoint sleeps.
fn busybox_image(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy("/usr/bin/busybox", rootfs.join("busybox")).unwrap();
    let layer = dir.join("layer.tar");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(dir.join("rootfs"))
            .arg("-cf")
            .arg(&layer)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let img = dir.join("img");
    std::fs::create_dir_all(img.join("blobs/sha256")).unwrap();
    let (layer_digest, layer_size) = blob(&img, &std::fs::read(&layer).unwrap());
    let config = json!({"architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "3600"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}});
    let (config_digest, config_size) = blob(&img, config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]});
    let (manifest_digest, manifest_size) = blob(&img, manifest.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": "berth.test/busybox:1"}}]});
    std::fs::write(img.join("index.json"), index.to_string()).unwrap();
    std::fs::write(img.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let archive = dir.join("image.tar");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(&img)
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    archive
}

/// Runs `script` with ctr's default CNI paths pointing at `cni_conf` and our bin dir.
fn with_cni_paths(
    host: &TestNetns,
    dir: &Path,
    cni_conf: &Path,
    script: &str,
) -> std::process::Output {
    for d in ["etc-upper", "etc-work"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let prelude = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir=/etc,upperdir={up},workdir={work} /etc\n\
         mkdir -p /etc/cni/net.d && mount --bind {conf} /etc/cni/net.d\n\
         mount -t tmpfs tmpfs /opt && mkdir -p /opt/cni/bin && mount --bind {bin} /opt/cni/bin\n",
        up = dir.join("etc-upper").display(),
        work = dir.join("etc-work").display(),
        conf = cni_conf.display(),
        bin = our_bin_dir().display()
    );
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", host.path()))
        .args(["unshare", "-m", "--propagation", "private", "sh", "-s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{prelude}{script}").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn containerd_sets_up_containers_with_our_plugins() {
    let host = TestNetns::new("ch");
    let dir = TempDir::new("ctrd");
    let ipam = dir.path().join("ipam");
    let conf_dir = dir.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conflist = json!({"cniVersion": "1.0.0", "name": "ctrnet", "plugins": [
        {"type": "bridge", "bridge": "br-ctr", "isGateway": true, "ipMasq": true,
         "ipam": {"type": "host-local", "dataDir": ipam, "ranges": [[{"subnet": "10.93.0.0/24"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "loopback"}]});
    std::fs::write(conf_dir.join("10-berth.conflist"), conflist.to_string()).unwrap();
    let containerd = Containerd::start(&host, dir.path());
    let image = busybox_image(dir.path());
    let import = containerd.ctr(&["images", "import", image.to_str().unwrap()]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let sock = containerd.socket.display().to_string();
    let fifo = dir.path().join("fifo").display().to_string();
    let ns = containerd.namespace.clone();
    let id = unique("ctr");
    let out = with_cni_paths(
        &host,
        dir.path(),
        &conf_dir,
        &format!(
            "ctr -a {sock} -n {ns} run -d --fifo-dir {fifo} --cni berth.test/busybox:1 {id}\n"
        ),
    );
    assert!(
        out.status.success(),
        "ctr run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // go-cni names the attachment <namespace>-<container>.
    let attachment = format!("{ns}-{id}");
    let lease = leases(&ipam, "ctrnet");
    assert_eq!(
        lease.get("10.93.0.2"),
        Some(&format!("{attachment}\r\neth0")),
        "{lease:?}"
    );
    let exec = containerd.ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "ip",
        &id,
        "/bin/busybox",
        "ip",
        "-o",
        "addr",
    ]);
    let addrs = String::from_utf8_lossy(&exec.stdout);
    assert!(
        addrs.contains("eth0") && addrs.contains("10.93.0.2/24"),
        "{addrs} {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    assert!(
        addrs.contains("lo") && addrs.contains("127.0.0.1/8"),
        "{addrs}"
    );
    assert!(ping(&host, "10.93.0.2"), "host cannot reach the container");

    // ctr does not call DEL; do what containerd's CRI does when the sandbox goes.
    let _ = containerd.ctr(&["task", "kill", "-s", "KILL", &id]);
    assert!(wait_for(Duration::from_secs(10), || containerd
        .ctr(&["task", "delete", &id])
        .status
        .success()));
    let _ = containerd.ctr(&["containers", "delete", &id]);
    let mut del_conf = conflist["plugins"][0].clone();
    del_conf["name"] = json!("ctrnet");
    del_conf["cniVersion"] = json!("1.0.0");
    Invocation::new("DEL", &attachment, "", &our_bin_dir(), Some(&host))
        .run("bridge", &del_conf)
        .ok();
    assert!(leases(&ipam, "ctrnet").is_empty());
    assert!(!host.sh("iptables -t nat -S").contains(&attachment));
}
