//! Network namespaces for proxy end-to-end tests: a client, a "node" running the proxy
//! (and the API server fixture), and a backend namespace holding the "pods".
//!
//!   client (198.18.1.2) ── veth ── (198.18.1.1) node (198.18.2.1) ── veth ── backend (198.18.2.11..)
//!
//! All addresses exist only inside these namespaces.

#![allow(dead_code)]

use berth_tests::apiserver::{ApiServer, ENDPOINT_SLICES, NODES, Options, SERVICES};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub const NODE_IP: &str = "198.18.1.1";
pub const CLIENT_IP: &str = "198.18.1.2";
pub const POD_CIDR: &str = "198.18.2.0/24";
pub const SERVICE_CIDR: &str = "198.19.0.0/24";

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A named network namespace, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(role: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bpx{}{}{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            role
        );
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec("ip", &["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut full = vec![format!("--net={}", self.path()), cmd.to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        run("nsenter", &refs)
    }

    pub fn try_exec(&self, cmd: &str, args: &[&str]) -> bool {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .arg(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it makes live there).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The three namespaces wired together, with the API server fixture inside the node.
pub struct Cluster {
    pub client: NetNs,
    pub node: NetNs,
    pub backend: NetNs,
    pub api: ApiServer,
    pub proxy: Option<Child>,
    pub proxy_log: tempfile::NamedTempFile,
}

/// IPv6 addresses of the dual-stack variant, mirroring the IPv4 ones.
pub const NODE_IP6: &str = "fd00:18:1::1";
pub const SERVICE_CIDR6: &str = "fd00:19::/112";

impl Cluster {
    pub fn new() -> Self {
        Self::build(false)
    }

    /// Also IPv6: client fd00:18:1::2, node fd00:18:1::1 and fd00:18:2::1, backends
    /// fd00:18:2::11..14, Services from both families' CIDRs.
    pub fn new_dual_stack() -> Self {
        Self::build(true)
    }

    fn build(dual_stack: bool) -> Self {
        let client = NetNs::new("c");
        let node = NetNs::new("n");
        let backend = NetNs::new("b");
        let tag = &node.name;
        let (c_if, n_c_if, n_b_if, b_if) = (
            format!("{tag}c"),
            format!("{tag}x"),
            format!("{tag}y"),
            format!("{tag}b"),
        );
        // Create the veth pairs inside the node namespace and move the peers out, so
        // nothing ever appears in the host namespace.
        node.exec(
            "ip",
            &[
                "link",
                "add",
                &n_c_if,
                "type",
                "veth",
                "peer",
                "name",
                &c_if,
                "netns",
                &client.name,
            ],
        );
        node.exec(
            "ip",
            &[
                "link",
                "add",
                &n_b_if,
                "type",
                "veth",
                "peer",
                "name",
                &b_if,
                "netns",
                &backend.name,
            ],
        );
        node.exec("ip", &["addr", "add", "198.18.1.1/24", "dev", &n_c_if]);
        node.exec("ip", &["addr", "add", "198.18.2.1/24", "dev", &n_b_if]);
        node.exec("ip", &["link", "set", &n_c_if, "up"]);
        node.exec("ip", &["link", "set", &n_b_if, "up"]);
        node.exec("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        client.exec("ip", &["addr", "add", "198.18.1.2/24", "dev", &c_if]);
        client.exec("ip", &["link", "set", &c_if, "up"]);
        client.exec("ip", &["route", "add", "default", "via", NODE_IP]);
        // Like a real node, the node has a default route to "the network": a veth whose
        // gateway never answers, so unknown destinations are forwarded, then vanish.
        let (uplink, uplink_peer) = (format!("{tag}u"), format!("{tag}v"));
        node.exec(
            "ip",
            &[
                "link",
                "add",
                &uplink,
                "type",
                "veth",
                "peer",
                "name",
                &uplink_peer,
            ],
        );
        node.exec("ip", &["addr", "add", "198.18.3.1/24", "dev", &uplink]);
        node.exec("ip", &["link", "set", &uplink, "up"]);
        node.exec("ip", &["link", "set", &uplink_peer, "up"]);
        node.exec("ip", &["route", "add", "default", "via", "198.18.3.2"]);
        backend.exec("ip", &["link", "set", &b_if, "up"]);
        for i in 11..=14 {
            backend.exec(
                "ip",
                &["addr", "add", &format!("198.18.2.{i}/24"), "dev", &b_if],
            );
        }
        backend.exec("ip", &["route", "add", "default", "via", "198.18.2.1"]);
        let mut service_cidrs = vec![SERVICE_CIDR.to_string()];
        let mut addresses = vec![json!({"type": "InternalIP", "address": NODE_IP})];
        if dual_stack {
            // nodad: usable at once, without waiting for duplicate address detection.
            let add = |ns: &NetNs, addr: &str, dev: &str| {
                ns.exec("ip", &["-6", "addr", "add", addr, "dev", dev, "nodad"]);
            };
            add(&node, "fd00:18:1::1/64", &n_c_if);
            add(&node, "fd00:18:2::1/64", &n_b_if);
            add(&client, "fd00:18:1::2/64", &c_if);
            for i in 11..=14 {
                add(&backend, &format!("fd00:18:2::{i}/64"), &b_if);
            }
            client.exec("ip", &["-6", "route", "add", "default", "via", NODE_IP6]);
            backend.exec(
                "ip",
                &["-6", "route", "add", "default", "via", "fd00:18:2::1"],
            );
            node.exec("sysctl", &["-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
            service_cidrs.push(SERVICE_CIDR6.into());
            addresses.push(json!({"type": "InternalIP", "address": NODE_IP6}));
        }
        let api = node.enter(move || {
            ApiServer::start_with(Options {
                service_cidrs,
                ..Default::default()
            })
            .unwrap()
        });
        api.create(
            &NODES,
            "",
            json!({"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z1"}},
            "status": {"addresses": addresses}}),
        )
        .unwrap();
        Cluster {
            client,
            node,
            backend,
            api,
            proxy: None,
            proxy_log: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    /// Starts berth-proxy inside the node namespace.
    pub fn start_proxy(&mut self, extra: &[&str]) {
        let log = self.proxy_log.reopen().unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.node.path()))
            .arg(env!("CARGO_BIN_EXE_berth-proxy"))
            .args([
                "--kubeconfig",
                self.api.kubeconfig_path().to_str().unwrap(),
                "--hostname-override",
                "node-a",
                "--cluster-cidr",
                POD_CIDR,
            ])
            .args([
                "--iptables-min-sync-period",
                "0s",
                "--conntrack-max-per-core",
                "0",
                "--metrics-bind-address",
                "",
                "--healthz-bind-address",
                &format!("{NODE_IP}:10256"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proxy = Some(child);
    }

    pub fn stop_proxy(&mut self) {
        if let Some(mut c) = self.proxy.take() {
            // nsenter execs the proxy, so this PID is the proxy itself.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.proxy_log.path()).unwrap_or_default()
    }

    /// TCP servers on `ip:port` in the backend namespace answering with their own address.
    pub fn serve_backend(&self, ip: &str, port: u16) {
        let addr = SocketAddr::new(ip.parse().unwrap(), port);
        let listener = self.backend.enter(move || TcpListener::bind(addr).unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let peer = conn
                    .peer_addr()
                    .map(|p| p.ip().to_string())
                    .unwrap_or_default();
                let _ = conn.write_all(format!("{addr} {peer}").as_bytes());
            }
        });
    }

    /// Connects from the client namespace; Ok((backend, source seen by backend)).
    pub fn connect(&self, target: &str) -> std::io::Result<(String, String)> {
        self.connect_from(&self.client, None, target)
    }

    /// Connects from `ns`, optionally from source address `source`.
    pub fn connect_from(
        &self,
        ns: &NetNs,
        source: Option<&str>,
        target: &str,
    ) -> std::io::Result<(String, String)> {
        let target: SocketAddr = target.parse().unwrap();
        let source: Option<SocketAddr> = source.map(|s| format!("{s}:0").parse().unwrap());
        ns.enter(move || {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(target),
                socket2::Type::STREAM,
                None,
            )?;
            if let Some(src) = source {
                socket.bind(&src.into())?;
            }
            socket.connect_timeout(&target.into(), Duration::from_secs(2))?;
            let mut s: TcpStream = socket.into();
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            let (backend, source) = out.split_once(' ').unwrap_or((&out, ""));
            Ok((backend.to_string(), source.to_string()))
        })
    }

    pub fn create_service(&self, name: &str, spec: Value) -> Value {
        self.api
            .create(
                &SERVICES,
                "default",
                json!({"metadata": {"name": name}, "spec": spec}),
            )
            .unwrap()
    }

    /// Sets the one EndpointSlice of `svc`: (ip, ready, node).
    pub fn set_endpoints(&self, svc: &str, port: u16, eps: &[(&str, bool, &str)]) {
        let endpoints: Vec<Value> = eps.iter().map(|(ip, ready, node)| json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false}, "nodeName": node})).collect();
        let name = format!("{svc}-slice");
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "http", "port": port, "protocol": "TCP"}]});
        match self.api.get(&ENDPOINT_SLICES, "default", &name) {
            Ok(_) => {
                self.api.update(&ENDPOINT_SLICES, "default", slice).unwrap();
            }
            Err(_) => {
                self.api.create(&ENDPOINT_SLICES, "default", slice).unwrap();
            }
        }
    }

    /// Sets the one EndpointSlice `<svc>-<family>` of `svc` as given: `endpoints` are
    /// EndpointSlice endpoint objects (hints, conditions...).
    pub fn set_slice(
        &self,
        svc: &str,
        address_type: &str,
        protocol: &str,
        port: u16,
        endpoints: Value,
    ) {
        let name = format!("{svc}-{}", address_type.to_lowercase());
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": address_type, "endpoints": endpoints,
            "ports": [{"name": "http", "port": port, "protocol": protocol}]});
        match self.api.get(&ENDPOINT_SLICES, "default", &name) {
            Ok(_) => {
                self.api.update(&ENDPOINT_SLICES, "default", slice).unwrap();
            }
            Err(_) => {
                self.api.create(&ENDPOINT_SLICES, "default", slice).unwrap();
            }
        }
    }

    /// UDP servers on `ip:port` in the backend namespace answering each datagram with their own address.
    pub fn serve_backend_udp(&self, ip: &str, port: u16) {
        let addr: SocketAddr = SocketAddr::new(ip.parse().unwrap(), port);
        let socket = self
            .backend
            .enter(move || std::net::UdpSocket::bind(addr).unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(addr.to_string().as_bytes(), peer);
            }
        });
    }

    /// Backends reached by `n` connections to `target`.
    pub fn distribution(
        &self,
        target: &str,
        n: usize,
    ) -> std::collections::BTreeMap<String, usize> {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..n {
            if let Ok((backend, _)) = self.connect(target) {
                *seen.entry(backend).or_insert(0) += 1;
            }
        }
        seen
    }

    /// Polls `cond` until it holds or the deadline passes (then panics with the proxy log).
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        if berth_tests::wait_for(Duration::from_secs(30), what, || cond().then_some(())).is_ok() {
            return;
        }
        panic!(
            "timed out waiting for {what}\nproxy log:\n{}\niptables:\n{}\nnftables:\n{}",
            self.proxy_log(),
            self.node.exec("iptables-save", &[]),
            self.node.exec("nft", &["list", "ruleset"])
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_proxy();
    }
}

pub fn cluster_ip(svc: &Value) -> IpAddr {
    svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap()
}

pub mod scenarios;
