//! IPVS mode's full sync, for real inside test network namespaces: kube-ipvs0 and its
//! addresses, the ipsets, the iptables rules and the sysctls are the kernel's. Only
//! the IPVS table is a recording double (this machine has no ip_vs module); it
//! answers like the kernel does (EEXIST on a duplicate, ESRCH/ENOENT on a missing
//! entry), so a sync that adds twice or deletes what is not there fails here too.

mod common;

use berth_proxy::backend::Backend;
use berth_proxy::config::{LocalDetector, NodePortAddresses};
use berth_proxy::iptables::SystemNetfilter;
use berth_proxy::ipvs::netlink::ServiceKey;
use berth_proxy::ipvs::{
    Destination, IpvsError, IpvsKernel, IpvsOptions, IpvsProxier, RealServer, Timeouts,
    VirtualServer,
};
use berth_proxy::model::{ChangeTracker, SERVICE_NAME_LABEL};
use berth_proxy::net::Cidr;
use common::NetNs;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    AddService(ServiceKey),
    UpdateService(ServiceKey),
    DeleteService(ServiceKey),
    AddDest(ServiceKey, SocketAddr),
    UpdateDest(ServiceKey, SocketAddr, u32),
    DeleteDest(ServiceKey, SocketAddr),
    Timeouts(Timeouts),
}

#[derive(Default)]
struct Table {
    services: BTreeMap<ServiceKey, (VirtualServer, BTreeMap<SocketAddr, Destination>)>,
    ops: Vec<Op>,
}

impl Table {
    /// The real servers of `vs`, or ESRCH as the kernel answers for an unknown service.
    fn real_servers(
        &mut self,
        vs: &VirtualServer,
        what: &str,
    ) -> Result<&mut BTreeMap<SocketAddr, Destination>, IpvsError> {
        self.services
            .get_mut(&vs.key())
            .map(|(_, d)| d)
            .ok_or_else(|| kernel_err(ESRCH, what))
    }
}

/// An IPVS table in memory, shared so the test can look at it and change connection
/// counts while the proxier owns its handle.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Table>>);

fn kernel_err(errno: i32, what: &str) -> IpvsError {
    IpvsError::Kernel {
        what: what.to_string(),
        source: std::io::Error::from_raw_os_error(errno),
    }
}

const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;

fn sa(rs: &RealServer) -> SocketAddr {
    SocketAddr::new(rs.addr, rs.port)
}

impl Recording {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap()
    }

    /// "addr:port/proto -> [real servers with weights]" for every virtual server.
    fn dump(&self) -> BTreeMap<String, Vec<String>> {
        self.table()
            .services
            .values()
            .map(|(vs, d)| {
                (
                    format!("{}/{}/{}", vs.addr, vs.protocol, vs.port),
                    d.values()
                        .map(|d| format!("{}:{}w{}", d.server.addr, d.server.port, d.server.weight))
                        .collect(),
                )
            })
            .collect()
    }

    fn take_ops(&self) -> Vec<Op> {
        std::mem::take(&mut self.table().ops)
    }

    fn set_conns(&self, vs: ServiceKey, rs: &str, active: u32) {
        let rs: SocketAddr = rs.parse().unwrap();
        let mut t = self.table();
        let d = t.services.get_mut(&vs).unwrap().1.get_mut(&rs).unwrap();
        d.active_conns = active;
    }
}

impl IpvsKernel for Recording {
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        Ok(self
            .table()
            .services
            .values()
            .map(|(v, _)| v.clone())
            .collect())
    }

    fn destinations(&mut self, vs: &VirtualServer) -> Result<Vec<Destination>, IpvsError> {
        let mut t = self.table();
        let d = t.real_servers(vs, "listing real servers")?;
        Ok(d.values().cloned().collect())
    }

    fn add_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        let mut t = self.table();
        if t.services.contains_key(&vs.key()) {
            return Err(kernel_err(EEXIST, "adding virtual server"));
        }
        t.services.insert(vs.key(), (vs.clone(), BTreeMap::new()));
        t.ops.push(Op::AddService(vs.key()));
        Ok(())
    }

    fn update_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        let mut t = self.table();
        let entry = t
            .services
            .get_mut(&vs.key())
            .ok_or_else(|| kernel_err(ESRCH, "updating virtual server"))?;
        entry.0 = vs.clone();
        t.ops.push(Op::UpdateService(vs.key()));
        Ok(())
    }

    fn delete_service(&mut self, vs: &VirtualServer) -> Result<(), IpvsError> {
        let mut t = self.table();
        t.services
            .remove(&vs.key())
            .ok_or_else(|| kernel_err(ESRCH, "deleting virtual server"))?;
        t.ops.push(Op::DeleteService(vs.key()));
        Ok(())
    }

    fn add_destination(&mut self, vs: &VirtualServer, rs: &RealServer) -> Result<(), IpvsError> {
        let mut t = self.table();
        let d = t.real_servers(vs, "adding real server")?;
        if d.contains_key(&sa(rs)) {
            return Err(kernel_err(EEXIST, "adding real server"));
        }
        d.insert(
            sa(rs),
            Destination {
                server: rs.clone(),
                active_conns: 0,
                inactive_conns: 0,
            },
        );
        t.ops.push(Op::AddDest(vs.key(), sa(rs)));
        Ok(())
    }

    fn update_destination(&mut self, vs: &VirtualServer, rs: &RealServer) -> Result<(), IpvsError> {
        let mut t = self.table();
        let d = t.real_servers(vs, "updating real server")?;
        d.get_mut(&sa(rs))
            .ok_or_else(|| kernel_err(ENOENT, "updating real server"))?
            .server
            .weight = rs.weight;
        t.ops.push(Op::UpdateDest(vs.key(), sa(rs), rs.weight));
        Ok(())
    }

    fn delete_destination(&mut self, vs: &VirtualServer, rs: &RealServer) -> Result<(), IpvsError> {
        let mut t = self.table();
        let d = t.real_servers(vs, "deleting real server")?;
        d.remove(&sa(rs))
            .ok_or_else(|| kernel_err(ENOENT, "deleting real server"))?;
        t.ops.push(Op::DeleteDest(vs.key(), sa(rs)));
        Ok(())
    }

    fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<(), IpvsError> {
        self.table().ops.push(Op::Timeouts(timeouts));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IpvsError> {
        self.table().services.clear();
        Ok(())
    }
}

type Proxier = IpvsProxier<Recording, SystemNetfilter>;

fn options() -> IpvsOptions {
    IpvsOptions {
        families: vec![false],
        scheduler: "rr".into(),
        masquerade_all: false,
        masquerade_bit: 14,
        local: LocalDetector::Cidrs(vec![Cidr::parse("198.18.2.0/24").unwrap()]),
        node_port_addresses: NodePortAddresses::All,
        strict_arp: false,
        timeouts: Timeouts::default(),
        exclude_cidrs: vec![],
        drain_max_wait: Duration::from_secs(3600),
    }
}

/// A namespace with a "node" interface carrying the node address NodePorts use, and
/// kube-ipvs0 made beforehand: this machine's kernel has no dummy driver, so a bridge
/// (left down, as the proxier leaves kube-ipvs0) stands in where dummy is missing.
/// The proxier takes an existing kube-ipvs0 as it is, as upstream does; creating it is
/// tested in ipvs_kernel.rs.
fn node_ns() -> NetNs {
    let ns = NetNs::new("v");
    ns.exec("ip", &["link", "add", "node0", "type", "bridge"]);
    ns.exec("ip", &["addr", "add", "198.18.1.1/24", "dev", "node0"]);
    ns.exec("ip", &["link", "set", "node0", "up"]);
    if !ns.try_exec("ip", &["link", "add", "kube-ipvs0", "type", "dummy"]) {
        ns.exec("ip", &["link", "add", "kube-ipvs0", "type", "bridge"]);
    }
    ns
}

fn new_proxier(ns: &NetNs, table: &Recording, opts: IpvsOptions) -> Proxier {
    let table = table.clone();
    ns.enter(move || IpvsProxier::new(table, SystemNetfilter::default(), opts).unwrap())
}

/// Runs one sync inside the namespace (iptables and ipset inherit the thread's netns).
fn sync(ns: &NetNs, p: Proxier, t: &mut ChangeTracker, full: bool) -> Proxier {
    let snapshot = t.snapshot();
    ns.enter(move || {
        let mut p = p;
        p.sync(&snapshot, full).unwrap();
        p
    })
}

fn service(t: &mut ChangeTracker, name: &str, spec: Value, lb: Option<&str>) {
    let mut svc = json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec});
    if let Some(ip) = lb {
        svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    }
    t.apply_service(&serde_json::from_value(svc).unwrap());
}

fn slice(t: &mut ChangeTracker, svc: &str, port: u16, proto: &str, eps: &[(&str, &str)]) {
    family_slice(t, svc, "IPv4", port, proto, eps)
}

fn family_slice(
    t: &mut ChangeTracker,
    svc: &str,
    family: &str,
    port: u16,
    proto: &str,
    eps: &[(&str, &str)],
) {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": true}}))
        .collect();
    let s = json!({"metadata": {"namespace": "ns", "name": format!("{svc}-{family}"), "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": family, "endpoints": endpoints, "ports": [{"name": "p", "port": port, "protocol": proto}]});
    t.apply_slice(&serde_json::from_value(s).unwrap());
}

/// web: NodePort with an external IP, one endpoint here and one elsewhere;
/// lb: LoadBalancer with externalTrafficPolicy Local.
fn cluster() -> ChangeTracker {
    let mut t = ChangeTracker::new("node-a");
    service(
        &mut t,
        "web",
        json!({"type": "NodePort", "clusterIP": "198.19.0.10", "clusterIPs": ["198.19.0.10"],
               "externalIPs": ["203.0.113.7"],
               "ports": [{"name": "p", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
        None,
    );
    slice(
        &mut t,
        "web",
        8080,
        "TCP",
        &[("198.18.2.11", "node-a"), ("198.18.2.12", "node-b")],
    );
    service(
        &mut t,
        "lb",
        json!({"type": "LoadBalancer", "clusterIP": "198.19.0.20", "clusterIPs": ["198.19.0.20"],
               "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
               "ports": [{"name": "p", "port": 443, "protocol": "TCP", "nodePort": 30443}]}),
        Some("198.51.100.20"),
    );
    slice(&mut t, "lb", 8443, "TCP", &[("198.18.2.13", "node-a")]);
    t
}

fn kube_ipvs0_addresses(ns: &NetNs) -> BTreeSet<String> {
    let out = ns.exec("ip", &["-j", "addr", "show", "dev", "kube-ipvs0"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// Members of one set, from `ipset list`.
fn members(ns: &NetNs, set: &str) -> BTreeSet<String> {
    let out = ns.exec("ipset", &["list", set]);
    out.split("Members:\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Asserts that `listing` (an `ipset save` or `iptables-save` dump) holds
/// every one of `expected`.
fn assert_listed(listing: &str, expected: &[&str]) {
    for line in expected {
        assert!(listing.contains(line), "missing {line}\n{listing}");
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn key(ip: &str, port: u16) -> ServiceKey {
    (ip.parse::<IpAddr>().unwrap(), 6, port)
}

#[test]
fn full_sync_programs_ipvs_addresses_sets_and_rules_in_its_netns_only() {
    let ns = node_ns();
    let bystander = NetNs::new("w");
    let table = Recording::default();
    let mut t = cluster();
    let p = new_proxier(&ns, &table, options());
    let _p = sync(&ns, p, &mut t, true);

    let want: BTreeMap<String, Vec<String>> = [
        (
            "198.18.1.1/6/30080",
            vec!["198.18.2.11:8080w1", "198.18.2.12:8080w1"],
        ),
        ("198.18.1.1/6/30443", vec!["198.18.2.13:8443w1"]),
        (
            "198.19.0.10/6/80",
            vec!["198.18.2.11:8080w1", "198.18.2.12:8080w1"],
        ),
        ("198.19.0.20/6/443", vec!["198.18.2.13:8443w1"]),
        ("198.51.100.20/6/443", vec!["198.18.2.13:8443w1"]),
        (
            "203.0.113.7/6/80",
            vec!["198.18.2.11:8080w1", "198.18.2.12:8080w1"],
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(table.dump(), want);
    let vs = table.table().services[&key("198.19.0.10", 80)].0.clone();
    assert_eq!(vs.scheduler, "rr");

    assert_eq!(
        kube_ipvs0_addresses(&ns),
        set(&[
            "198.19.0.10/32",
            "198.19.0.20/32",
            "198.51.100.20/32",
            "203.0.113.7/32"
        ])
    );
    let link = ns.exec("ip", &["-j", "link", "show", "kube-ipvs0"]);
    assert!(
        link.contains("\"operstate\":\"DOWN\""),
        "kube-ipvs0 stays down: {link}"
    );

    assert_eq!(
        members(&ns, "KUBE-CLUSTER-IP"),
        set(&["198.19.0.10,tcp:80", "198.19.0.20,tcp:443"])
    );
    assert_eq!(
        members(&ns, "KUBE-EXTERNAL-IP"),
        set(&["203.0.113.7,tcp:80"])
    );
    assert_eq!(
        members(&ns, "KUBE-LOAD-BALANCER"),
        set(&["198.51.100.20,tcp:443"])
    );
    assert_eq!(
        members(&ns, "KUBE-LOAD-BALANCER-LOCAL"),
        set(&["198.51.100.20,tcp:443"])
    );
    assert_eq!(members(&ns, "KUBE-NODE-PORT-TCP"), set(&["30080", "30443"]));
    assert_eq!(members(&ns, "KUBE-NODE-PORT-LOCAL-TCP"), set(&["30443"]));
    assert_eq!(members(&ns, "KUBE-HEALTH-CHECK-NODE-PORT"), set(&["32000"]));
    assert_eq!(
        members(&ns, "KUBE-LOOP-BACK"),
        set(&[
            "198.18.2.11,tcp:8080,198.18.2.11",
            "198.18.2.13,tcp:8443,198.18.2.13"
        ])
    );
    assert_eq!(
        members(&ns, "KUBE-IPVS-IPS"),
        set(&["198.19.0.10", "198.19.0.20", "198.51.100.20", "203.0.113.7"])
    );
    let save = ns.exec("ipset", &["save"]);
    assert_listed(
        &save,
        &[
            "create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536",
            "create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536",
            "create KUBE-NODE-PORT-UDP bitmap:port range 0-65535",
            "create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536",
            "create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536",
        ],
    );

    let nat = ns.exec("iptables-save", &["-t", "nat"]);
    assert_listed(
        &nat,
        &[
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            "-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE",
            // iptables-save puts the address match first.
            "-A KUBE-SERVICES ! -s 198.18.2.0/24 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ",
            "-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER",
            "-A KUBE-LOAD-BALANCER -m comment --comment \"Kubernetes service load balancer ip + port with externalTrafficPolicy=local\" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN",
            "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN",
            "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ",
            "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
            "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        ],
    );
    let filter = ns.exec("iptables-save", &["-t", "filter"]);
    assert_listed(
        &filter,
        &[
            "-A INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER",
            "-A OUTPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER",
            "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD",
            "-A KUBE-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT",
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable",
            "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
        ],
    );

    // Sets, links and rules are per network namespace: nothing leaked next door.
    assert_eq!(bystander.exec("ipset", &["list", "-n"]).trim(), "");
    assert!(!bystander.try_exec("ip", &["link", "show", "kube-ipvs0"]));
    assert!(!bystander.exec("iptables-save", &[]).contains("KUBE-"));
}

#[test]
fn deleting_a_service_removes_its_addresses_members_and_virtual_servers() {
    let ns = node_ns();
    let table = Recording::default();
    let mut t = cluster();
    let p = new_proxier(&ns, &table, options());
    let p = sync(&ns, p, &mut t, true);
    table.take_ops();

    let lb: k8s_openapi::api::core::v1::Service = serde_json::from_value(
        json!({"metadata": {"namespace": "ns", "name": "lb"}, "spec": {"clusterIP": "198.19.0.20"}}),
    )
    .unwrap();
    t.delete_service(&lb);
    let _p = sync(&ns, p, &mut t, false);

    let keys: BTreeSet<String> = table.dump().into_keys().collect();
    assert_eq!(
        keys,
        set(&["198.18.1.1/6/30080", "198.19.0.10/6/80", "203.0.113.7/6/80"])
    );
    let ops = table.take_ops();
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, Op::DeleteService(_)))
            .count(),
        3,
        "{ops:?}"
    );
    assert!(
        ops.iter().all(|o| matches!(o, Op::DeleteService(_))),
        "{ops:?}"
    );
    assert_eq!(
        kube_ipvs0_addresses(&ns),
        set(&["198.19.0.10/32", "203.0.113.7/32"])
    );
    assert_eq!(
        members(&ns, "KUBE-CLUSTER-IP"),
        set(&["198.19.0.10,tcp:80"])
    );
    assert!(members(&ns, "KUBE-LOAD-BALANCER").is_empty());
    assert!(members(&ns, "KUBE-HEALTH-CHECK-NODE-PORT").is_empty());
    assert_eq!(members(&ns, "KUBE-NODE-PORT-TCP"), set(&["30080"]));
    assert_eq!(
        members(&ns, "KUBE-IPVS-IPS"),
        set(&["198.19.0.10", "203.0.113.7"])
    );
    // Empty sets take their rules with them.
    let nat = ns.exec("iptables-save", &["-t", "nat"]);
    assert!(!nat.contains("KUBE-LOAD-BALANCER dst,dst"), "{nat}");
}

#[test]
fn restart_converges_without_duplicates_and_removes_leftovers() {
    let ns = node_ns();
    let table = Recording::default();
    let mut t = cluster();
    let p = new_proxier(&ns, &table, options());
    let p = sync(&ns, p, &mut t, true);
    let before = table.dump();
    drop(p);

    // Leftovers of an earlier run, and a virtual server of someone else.
    {
        let mut tb = table.table();
        for (ip, port) in [("198.19.0.99", 53), ("10.200.0.1", 80)] {
            let vs = VirtualServer {
                addr: ip.parse().unwrap(),
                protocol: 6,
                port,
                scheduler: "rr".into(),
                flags: 0,
                timeout: 0,
            };
            tb.services.insert(vs.key(), (vs, BTreeMap::new()));
        }
        // An endpoint of web that is gone, left with weight 0 by a drain.
        let stale: SocketAddr = "198.18.2.99:8080".parse().unwrap();
        tb.services
            .get_mut(&key("198.19.0.10", 80))
            .unwrap()
            .1
            .insert(
                stale,
                Destination {
                    server: RealServer {
                        addr: stale.ip(),
                        port: stale.port(),
                        weight: 0,
                    },
                    active_conns: 0,
                    inactive_conns: 0,
                },
            );
        tb.ops.clear();
    }
    ns.exec(
        "ip",
        &["addr", "add", "198.19.0.99/32", "dev", "kube-ipvs0"],
    );
    ns.exec("ipset", &["add", "KUBE-CLUSTER-IP", "198.19.0.99,udp:53"]);

    let opts = IpvsOptions {
        exclude_cidrs: vec![Cidr::parse("10.200.0.0/16").unwrap()],
        ..options()
    };
    let p = new_proxier(&ns, &table, opts.clone());
    let p = sync(&ns, p, &mut t, true);
    let mut after = table.dump();
    assert!(
        after.remove("10.200.0.1/6/80").is_some(),
        "excludeCIDRs keep their virtual servers"
    );
    assert_eq!(after, before);
    let ops = table.take_ops();
    assert!(
        !ops.iter()
            .any(|o| matches!(o, Op::AddService(_) | Op::AddDest(..))),
        "nothing is added twice: {ops:?}"
    );
    assert!(ops.contains(&Op::DeleteService(key("198.19.0.99", 53))));
    assert!(ops.contains(&Op::DeleteDest(
        key("198.19.0.10", 80),
        "198.18.2.99:8080".parse().unwrap()
    )));
    assert!(!kube_ipvs0_addresses(&ns).contains("198.19.0.99/32"));
    assert!(!members(&ns, "KUBE-CLUSTER-IP").contains("198.19.0.99,udp:53"));
    let filter = ns.exec("iptables-save", &["-t", "filter"]);
    assert_eq!(
        filter.matches("-j KUBE-IPVS-FILTER").count(),
        1,
        "jumps are not duplicated: {filter}"
    );
    let nat = ns.exec("iptables-save", &["-t", "nat"]);
    assert_eq!(
        nat.matches("-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT")
            .count(),
        1
    );

    // A third start against the converged state changes nothing at all.
    drop(p);
    let p = new_proxier(&ns, &table, opts);
    let _p = sync(&ns, p, &mut t, true);
    assert_eq!(table.take_ops(), []);
}

#[test]
fn terminating_tcp_real_servers_drain_and_udp_ones_go_at_once() {
    let ns = node_ns();
    let table = Recording::default();
    let mut t = cluster();
    service(
        &mut t,
        "dns",
        json!({"clusterIP": "198.19.0.53", "clusterIPs": ["198.19.0.53"],
               "ports": [{"name": "p", "port": 53, "protocol": "UDP"}]}),
        None,
    );
    slice(
        &mut t,
        "dns",
        53,
        "UDP",
        &[("198.18.2.21", "node-b"), ("198.18.2.22", "node-b")],
    );
    let p = new_proxier(&ns, &table, options());
    let p = sync(&ns, p, &mut t, true);
    let web = key("198.19.0.10", 80);
    table.set_conns(web, "198.18.2.12:8080", 2);
    table.take_ops();

    slice(&mut t, "web", 8080, "TCP", &[("198.18.2.11", "node-a")]);
    slice(&mut t, "dns", 53, "UDP", &[("198.18.2.21", "node-b")]);
    let p = sync(&ns, p, &mut t, false);
    let ops = table.take_ops();
    let gone: SocketAddr = "198.18.2.12:8080".parse().unwrap();
    assert!(ops.contains(&Op::UpdateDest(web, gone, 0)), "{ops:?}");
    assert!(
        !ops.contains(&Op::DeleteDest(web, gone)),
        "still has connections"
    );
    // Without connections on the other virtual servers it goes in the same sync.
    assert!(ops.contains(&Op::DeleteDest(key("198.18.1.1", 30080), gone)));
    assert!(ops.contains(&Op::DeleteDest(
        (("198.19.0.53".parse().unwrap()), 17, 53),
        "198.18.2.22:53".parse().unwrap()
    )));
    assert!(
        !ops.iter()
            .any(|o| matches!(o, Op::UpdateDest((_, 17, _), _, _))),
        "UDP does not drain: {ops:?}"
    );
    assert_eq!(
        table.dump()["198.19.0.10/6/80"],
        ["198.18.2.11:8080w1", "198.18.2.12:8080w0"]
    );

    // Connections closed: the next sync deletes it.
    table.set_conns(web, "198.18.2.12:8080", 0);
    let _p = sync(&ns, p, &mut t, false);
    assert_eq!(table.take_ops(), [Op::DeleteDest(web, gone)]);
    assert_eq!(table.dump()["198.19.0.10/6/80"], ["198.18.2.11:8080w1"]);
}

#[test]
fn a_drained_endpoint_that_returns_gets_its_weight_back() {
    let ns = node_ns();
    let table = Recording::default();
    let mut t = cluster();
    let p = new_proxier(&ns, &table, options());
    let p = sync(&ns, p, &mut t, true);
    let web = key("198.19.0.10", 80);
    table.set_conns(web, "198.18.2.12:8080", 1);
    slice(&mut t, "web", 8080, "TCP", &[("198.18.2.11", "node-a")]);
    let p = sync(&ns, p, &mut t, false);
    table.take_ops();
    slice(
        &mut t,
        "web",
        8080,
        "TCP",
        &[("198.18.2.11", "node-a"), ("198.18.2.12", "node-b")],
    );
    let _p = sync(&ns, p, &mut t, false);
    let back: SocketAddr = "198.18.2.12:8080".parse().unwrap();
    assert!(table.take_ops().contains(&Op::UpdateDest(web, back, 1)));
    assert_eq!(
        table.dump()["198.19.0.10/6/80"],
        ["198.18.2.11:8080w1", "198.18.2.12:8080w1"]
    );
}

#[test]
fn strict_arp_timeouts_and_scheduler_follow_the_options() {
    let ns = node_ns();
    let bystander = NetNs::new("w");
    let table = Recording::default();
    let opts = IpvsOptions {
        strict_arp: true,
        scheduler: "wlc".into(),
        timeouts: Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        },
        ..options()
    };
    let mut t = cluster();
    let p = new_proxier(&ns, &table, opts);
    let _p = sync(&ns, p, &mut t, true);
    let sysctl = |ns: &NetNs, key: &str| ns.exec("sysctl", &["-n", key]).trim().to_string();
    assert_eq!(sysctl(&ns, "net.ipv4.conf.all.arp_ignore"), "1");
    assert_eq!(sysctl(&ns, "net.ipv4.conf.all.arp_announce"), "2");
    assert_eq!(sysctl(&ns, "net.ipv4.ip_forward"), "1");
    assert_eq!(sysctl(&bystander, "net.ipv4.conf.all.arp_ignore"), "0");
    assert_eq!(sysctl(&bystander, "net.ipv4.conf.all.arp_announce"), "0");
    assert_eq!(
        table.table().ops.first(),
        Some(&Op::Timeouts(Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }))
    );
    assert!(
        table
            .table()
            .services
            .values()
            .all(|(vs, _)| vs.scheduler == "wlc")
    );
}

#[test]
fn cleanup_removes_everything_ipvs_mode_made() {
    let ns = node_ns();
    let table = Recording::default();
    let mut t = cluster();
    let p = new_proxier(&ns, &table, options());
    let p = sync(&ns, p, &mut t, true);
    ns.enter(move || {
        let mut p = p;
        p.cleanup().unwrap();
    });
    assert!(table.dump().is_empty());
    assert!(!ns.try_exec("ip", &["link", "show", "kube-ipvs0"]));
    assert_eq!(ns.exec("ipset", &["list", "-n"]).trim(), "");
    let rules = ns.exec("iptables-save", &[]);
    assert!(!rules.contains("KUBE-"), "{rules}");
}

#[test]
fn dual_stack_programs_both_families_and_restarts_cleanly() {
    let ns = node_ns();
    ns.exec(
        "ip",
        &["addr", "add", "fd00:18:1::1/64", "dev", "node0", "nodad"],
    );
    let table = Recording::default();
    let mut t = ChangeTracker::new("node-a");
    service(
        &mut t,
        "dual",
        json!({"type": "NodePort", "clusterIP": "198.19.0.30", "clusterIPs": ["198.19.0.30", "fd00:19::30"],
               "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
               "ports": [{"name": "p", "port": 80, "protocol": "TCP", "nodePort": 30090}]}),
        None,
    );
    family_slice(
        &mut t,
        "dual",
        "IPv4",
        8080,
        "TCP",
        &[("198.18.2.31", "node-a")],
    );
    family_slice(
        &mut t,
        "dual",
        "IPv6",
        8080,
        "TCP",
        &[("fd00:18:2::31", "node-a")],
    );
    let opts = IpvsOptions {
        families: vec![false, true],
        ..options()
    };
    let p = new_proxier(&ns, &table, opts.clone());
    let p = sync(&ns, p, &mut t, true);

    let dump = table.dump();
    assert_eq!(dump["fd00:19::30/6/80"], ["fd00:18:2::31:8080w1"]);
    assert_eq!(dump["fd00:18:1::1/6/30090"], ["fd00:18:2::31:8080w1"]);
    assert_eq!(dump["198.19.0.30/6/80"], ["198.18.2.31:8080w1"]);
    assert_eq!(dump.len(), 4, "{dump:?}");
    assert_eq!(
        kube_ipvs0_addresses(&ns),
        set(&["198.19.0.30/32", "fd00:19::30/128"])
    );
    assert_eq!(
        members(&ns, "KUBE-6-CLUSTER-IP"),
        set(&["fd00:19::30,tcp:80"])
    );
    assert_eq!(members(&ns, "KUBE-6-NODE-PORT-TCP"), set(&["30090"]));
    assert_eq!(
        members(&ns, "KUBE-6-LOOP-BACK"),
        set(&["fd00:18:2::31,tcp:8080,fd00:18:2::31"])
    );
    assert_eq!(
        members(&ns, "KUBE-CLUSTER-IP"),
        set(&["198.19.0.30,tcp:80"])
    );
    let save = ns.exec("ipset", &["save"]);
    assert!(
        save.contains(
            "create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536"
        ),
        "{save}"
    );
    let nat6 = ns.exec("ip6tables-save", &["-t", "nat"]);
    assert!(
        nat6.contains("-A KUBE-SERVICES -m set --match-set KUBE-6-CLUSTER-IP dst,dst -j ACCEPT"),
        "{nat6}"
    );
    let filter6 = ns.exec("ip6tables-save", &["-t", "filter"]);
    assert!(filter6.contains("-j KUBE-IPVS-FILTER"), "{filter6}");

    // What the kernel lists back (ipset's and ip's spelling of IPv6) matches the
    // plan, so a restart finds nothing to change.
    drop(p);
    table.take_ops();
    let before = ns.exec("ipset", &["save"]);
    let p = new_proxier(&ns, &table, opts);
    let _p = sync(&ns, p, &mut t, true);
    assert_eq!(table.take_ops(), []);
    assert_eq!(ns.exec("ipset", &["save"]), before);
    assert_eq!(
        kube_ipvs0_addresses(&ns),
        set(&["198.19.0.30/32", "fd00:19::30/128"])
    );
}

#[test]
fn flushed_rules_are_noticed_and_restored_by_the_next_sync() {
    let ns = node_ns();
    let table = Recording::default();
    let mut t = cluster();
    let p = new_proxier(&ns, &table, options());
    let p = sync(&ns, p, &mut t, true);
    let p = ns.enter(move || {
        let mut p = p;
        assert!(!p.tampered(), "nothing changed yet");
        p
    });
    ns.exec(
        "iptables",
        &[
            "-D",
            "INPUT",
            "-m",
            "comment",
            "--comment",
            "kubernetes ipvs access filter",
            "-j",
            "KUBE-IPVS-FILTER",
        ],
    );
    ns.exec("iptables", &["-F", "KUBE-IPVS-FILTER"]);
    ns.exec("iptables", &["-X", "KUBE-IPVS-FILTER"]);
    let p = ns.enter(move || {
        let mut p = p;
        assert!(p.tampered());
        p
    });
    let _p = sync(&ns, p, &mut t, false);
    let filter = ns.exec("iptables-save", &["-t", "filter"]);
    assert_listed(
        &filter,
        &[
            "-A INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER",
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
        ],
    );
}

#[test]
fn a_drain_gives_up_after_its_maximum_wait() {
    let ns = node_ns();
    let table = Recording::default();
    let mut t = cluster();
    let opts = IpvsOptions {
        drain_max_wait: Duration::ZERO,
        ..options()
    };
    let p = new_proxier(&ns, &table, opts);
    let p = sync(&ns, p, &mut t, true);
    let web = key("198.19.0.10", 80);
    table.set_conns(web, "198.18.2.12:8080", 5);
    table.take_ops();
    slice(&mut t, "web", 8080, "TCP", &[("198.18.2.11", "node-a")]);
    let _p = sync(&ns, p, &mut t, false);
    let gone: SocketAddr = "198.18.2.12:8080".parse().unwrap();
    let ops = table.take_ops();
    let weight_zero = ops
        .iter()
        .position(|o| *o == Op::UpdateDest(web, gone, 0))
        .expect("quiesced first");
    let deleted = ops
        .iter()
        .position(|o| *o == Op::DeleteDest(web, gone))
        .expect("deleted despite its connections");
    assert!(weight_zero < deleted, "{ops:?}");
}
