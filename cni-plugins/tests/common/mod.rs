//! Fixtures for the root integration tests: network namespaces that delete
//! themselves, plugin execution the way runtimes do it, and a conflist
//! driver that follows libcni's rules.
#![allow(dead_code)]

pub mod libcni;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test process: `<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// `ip netns add berth-cni-…`, deleted on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> Self {
        let name = format!("berth-cni-{}", unique(tag));
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name}");
        TestNetns { name }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace (nsenter keeps /sys as is).
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(args)
            .output()
            .expect("run nsenter")
    }

    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    pub fn ok(&self, args: &[&str]) -> bool {
        self.exec(args).status.success()
    }

    /// Deletes the namespace now (e.g. to test DEL after the netns is gone).
    pub fn delete(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("berth-cni-{}", unique(tag)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The directory holding our plugin binaries (cargo builds them for tests).
pub fn our_bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bridge"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub const REFERENCE_BIN_DIR: &str = "/usr/lib/cni";

/// The outcome of one plugin invocation.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: Value,
    pub raw: String,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> &Value {
        assert_eq!(self.code, 0, "plugin failed: {} {}", self.raw, self.stderr);
        &self.stdout
    }
    pub fn err_code(&self) -> u64 {
        assert_ne!(self.code, 0, "plugin unexpectedly succeeded: {}", self.raw);
        self.stdout["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.raw))
    }
    pub fn err_text(&self) -> String {
        format!(
            "{} {}",
            self.stdout["msg"].as_str().unwrap_or_default(),
            self.stdout["details"].as_str().unwrap_or_default()
        )
    }
}

/// One invocation's environment, as libcni builds it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: &'static str,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub cni_args: String,
    pub path: PathBuf,
    /// The namespace the plugin runs in (our "host"); None = the test's own.
    pub host_netns: Option<String>,
}

impl Invocation {
    pub fn new(
        command: &'static str,
        container_id: &str,
        netns: &str,
        path: &Path,
        host: Option<&TestNetns>,
    ) -> Self {
        Invocation {
            command,
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            cni_args: String::new(),
            path: path.to_path_buf(),
            host_netns: host.map(|h| h.path()),
        }
    }

    pub fn with_command(&self, command: &'static str) -> Self {
        Invocation {
            command,
            ..self.clone()
        }
    }

    /// Executes plugin `plugin_type` from `path` with `stdin`.
    pub fn run(&self, plugin_type: &str, stdin: &Value) -> Outcome {
        self.run_raw(plugin_type, stdin.to_string().as_bytes())
    }

    /// Executes plugin `plugin_type` from `path` with `stdin` sent verbatim.
    pub fn run_raw(&self, plugin_type: &str, stdin: &[u8]) -> Outcome {
        let bin = self.path.join(plugin_type);
        let mut cmd = Command::new(&bin);
        cmd.env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_ARGS", &self.cni_args)
            .env("CNI_PATH", &self.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(host) = &self.host_netns {
            let ns = File::open(host).expect("open host netns");
            // SAFETY: setns is async-signal-safe; runs in the child before exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address (without prefix length) of entry `index` of an ADD result's `ips`.
pub fn result_ip(result: &Value, index: usize) -> String {
    let address = result["ips"][index]["address"].as_str().unwrap();
    address.split('/').next().unwrap().to_string()
}

/// Pings `target` once from `from` (busybox ping; the system has no iputils).
pub fn ping(from: &TestNetns, target: &str) -> bool {
    let fam = if target.contains(':') {
        "ping6"
    } else {
        "ping"
    };
    from.ok(&["busybox", fam, "-c", "1", "-W", "2", target])
}

/// The leases host-local keeps for `network` under `data_dir`.
pub fn leases(data_dir: &Path, network: &str) -> BTreeMap<String, String> {
    let Ok(rd) = std::fs::read_dir(data_dir.join(network)) else {
        return BTreeMap::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.parse::<std::net::IpAddr>().ok()?;
            Some((name, std::fs::read_to_string(e.path()).ok()?))
        })
        .collect()
}

/// Interface names in a namespace.
pub fn links(ns: &TestNetns) -> Vec<String> {
    ns.sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs `f` on a thread that sits in `ns` (sockets it opens belong there).
pub fn in_netns<T: Send + 'static>(ns: &TestNetns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(ns.path()).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// Connects from `ns` to `addr` and returns what the server sends.
pub fn tcp_fetch(ns: &TestNetns, addr: &str) -> Option<String> {
    let addr: std::net::SocketAddr = addr.parse().expect("socket address");
    in_netns(ns, move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
}

/// A TCP server in a namespace that answers every connection with `body`
/// and closes it; stopped on drop.
pub struct TcpServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(ns: &TestNetns, port: u16, body: &'static str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let file = File::open(ns.path()).expect("open netns");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let listener = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind");
            listener.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.write_all(body.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server listening");
        TcpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
