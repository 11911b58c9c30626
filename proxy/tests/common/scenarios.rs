//! Traffic scenarios run against each proxy mode, inside test network namespaces.

use super::*;
use serde_json::json;

/// The proxy modes that can run on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Iptables,
    Nftables,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
        }
    }

    /// Whether the node's rules mention the Service `default/<svc>` (port "http").
    fn programs(self, c: &Cluster, svc: &str) -> bool {
        match self {
            Mode::Iptables => {
                let chain =
                    berth_proxy::iptables::service_chain(&berth_proxy::model::ServicePortName {
                        namespace: "default".into(),
                        name: svc.into(),
                        port: "http".into(),
                        protocol: berth_proxy::model::Protocol::Tcp,
                    });
                c.node
                    .exec("iptables-save", &["-t", "nat"])
                    .contains(&chain)
            }
            Mode::Nftables => c
                .node
                .exec("nft", &["list", "table", "ip", "kube-proxy"])
                .contains(&format!("-default/{svc}/tcp/http")),
        }
    }

    /// The node's rules in this mode, for failure messages.
    fn rules(self, c: &Cluster) -> String {
        match self {
            Mode::Iptables => c.node.exec("iptables-save", &["-c"]),
            Mode::Nftables => c.node.exec("nft", &["list", "ruleset"]),
        }
    }

    /// Removes the proxy's rules behind its back.
    fn tamper(self, c: &Cluster) {
        match self {
            Mode::Iptables => {
                c.node
                    .exec("iptables", &["-t", "nat", "-F", "KUBE-SERVICES"]);
                c.node
                    .exec("iptables", &["-t", "mangle", "-X", "KUBE-PROXY-CANARY"]);
            }
            Mode::Nftables => {
                c.node.exec("nft", &["delete", "table", "ip", "kube-proxy"]);
            }
        }
    }
}

fn web_service(c: &Cluster, name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]});
    json_patch::merge(&mut spec, &extra);
    c.create_service(name, spec)
}

pub fn cluster_ip_and_node_port_reach_every_backend(mode: Mode) {
    let mut c = Cluster::new();
    for ip in ["198.18.2.11", "198.18.2.12", "198.18.2.13"] {
        c.serve_backend(ip, 8080);
    }
    let svc = web_service(
        &c,
        "web",
        json!({"type": "LoadBalancer", "externalIPs": ["198.18.9.9"]}),
    );
    let mut with_status = svc.clone();
    with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.18.9.10"}]}});
    c.api
        .update_status(&berth_tests::apiserver::SERVICES, "default", with_status)
        .unwrap();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    c.set_endpoints(
        "web",
        8080,
        &[
            ("198.18.2.11", true, "node-a"),
            ("198.18.2.12", true, "node-b"),
            ("198.18.2.13", true, "node-b"),
            ("198.18.2.14", false, "node-b"),
        ],
    );
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    let vip = format!("{}:80", cluster_ip(&svc));
    c.wait_for("the ClusterIP to answer", || c.connect(&vip).is_ok());

    let seen = c.distribution(&vip, 60);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["198.18.2.11:8080", "198.18.2.12:8080", "198.18.2.13:8080"],
        "{seen:?}"
    );
    let nodeport = format!("{NODE_IP}:{node_port}");
    let seen = c.distribution(&nodeport, 60);
    assert_eq!(seen.len(), 3, "{seen:?}");
    // NodePort traffic is masqueraded (externalTrafficPolicy Cluster): backends see the node.
    let (_, source) = c.connect(&nodeport).unwrap();
    assert_eq!(source, "198.18.2.1");
    // ClusterIP traffic from outside the cluster CIDR is masqueraded too.
    let (_, source) = c.connect(&vip).unwrap();
    assert_eq!(source, "198.18.2.1");
    // externalIPs and LoadBalancer ingress IPs routed to the node are served too.
    c.wait_for("the LoadBalancer IP to answer", || {
        c.connect("198.18.9.10:80").is_ok()
    });
    assert_eq!(c.distribution("198.18.9.9:80", 30).len(), 3);
    assert_eq!(c.distribution("198.18.9.10:80", 30).len(), 3);
}

pub fn hairpin_traffic_is_masqueraded(mode: Mode) {
    let mut c = Cluster::new();
    c.serve_backend("198.18.2.11", 8080);
    let svc = web_service(&c, "self", json!({}));
    c.set_endpoints("self", 8080, &[("198.18.2.11", true, "node-a")]);
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    let vip = format!("{}:80", cluster_ip(&svc));
    c.wait_for("the ClusterIP to answer", || c.connect(&vip).is_ok());
    // A backend reaching itself through its Service: without SNAT the reply would
    // bypass the node and the connection would never complete.
    let (backend, source) = c
        .connect_from(&c.backend, Some("198.18.2.11"), &vip)
        .unwrap();
    assert_eq!(
        (backend.as_str(), source.as_str()),
        ("198.18.2.11:8080", "198.18.2.1")
    );
}

pub fn service_without_endpoints_rejects_and_endpoint_removal_stops_new_connections(mode: Mode) {
    let mut c = Cluster::new();
    for ip in ["198.18.2.11", "198.18.2.12"] {
        c.serve_backend(ip, 8080);
    }
    let empty = web_service(&c, "empty", json!({}));
    let web = web_service(&c, "web", json!({}));
    c.set_endpoints(
        "web",
        8080,
        &[
            ("198.18.2.11", true, "node-b"),
            ("198.18.2.12", true, "node-b"),
        ],
    );
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    let vip = format!("{}:80", cluster_ip(&web));
    c.wait_for("the ClusterIP to answer", || c.connect(&vip).is_ok());

    let err = c
        .connect(&format!("{}:80", cluster_ip(&empty)))
        .unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{err}\n{}",
        mode.rules(&c)
    );

    c.set_endpoints("web", 8080, &[("198.18.2.12", true, "node-b")]);
    c.wait_for("the removed endpoint to stop receiving connections", || {
        let seen = c.distribution(&vip, 20);
        seen.len() == 1 && seen.contains_key("198.18.2.12:8080")
    });
    // And once it is the only one, the empty Service gets endpoints and works.
    c.set_endpoints("empty", 8080, &[("198.18.2.11", true, "node-b")]);
    c.wait_for("the formerly empty Service to answer", || {
        c.connect(&format!("{}:80", cluster_ip(&empty))).is_ok()
    });
}

pub fn client_ip_affinity_sticks(mode: Mode) {
    let mut c = Cluster::new();
    for ip in ["198.18.2.11", "198.18.2.12", "198.18.2.13"] {
        c.serve_backend(ip, 8080);
    }
    let svc = web_service(&c, "sticky", json!({"sessionAffinity": "ClientIP"}));
    c.set_endpoints(
        "sticky",
        8080,
        &[
            ("198.18.2.11", true, "n"),
            ("198.18.2.12", true, "n"),
            ("198.18.2.13", true, "n"),
        ],
    );
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    let vip = format!("{}:80", cluster_ip(&svc));
    c.wait_for("the ClusterIP to answer", || c.connect(&vip).is_ok());
    let seen = c.distribution(&vip, 30);
    assert_eq!(
        seen.len(),
        1,
        "all connections of one client go to one backend: {seen:?}"
    );
    assert_eq!(seen.values().sum::<usize>(), 30);
}

pub fn external_traffic_policy_local_stays_local_and_health_check_port_answers(mode: Mode) {
    let mut c = Cluster::new();
    for ip in ["198.18.2.11", "198.18.2.12"] {
        c.serve_backend(ip, 8080);
    }
    let svc = web_service(
        &c,
        "lb",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
    );
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let hc_port = svc["spec"]["healthCheckNodePort"]
        .as_u64()
        .expect("the fixture allocates healthCheckNodePort");
    c.set_endpoints(
        "lb",
        8080,
        &[
            ("198.18.2.11", true, "node-a"),
            ("198.18.2.12", true, "node-b"),
        ],
    );
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    let nodeport = format!("{NODE_IP}:{node_port}");
    c.wait_for("the NodePort to answer", || c.connect(&nodeport).is_ok());

    let seen = c.distribution(&nodeport, 30);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["198.18.2.11:8080"],
        "only the local endpoint: {seen:?}"
    );
    let (_, source) = c.connect(&nodeport).unwrap();
    assert_eq!(
        source, CLIENT_IP,
        "Local policy preserves the client address"
    );
    // ClusterIP traffic still uses every endpoint.
    let seen = c.distribution(&format!("{}:80", cluster_ip(&svc)), 40);
    assert_eq!(seen.len(), 2, "{seen:?}");

    let health = |c: &Cluster| http_get(c, &format!("{NODE_IP}:{hc_port}"));
    c.wait_for("the health check node port to answer", || {
        health(&c).is_some()
    });
    let (status, body) = health(&c).unwrap();
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["localEndpoints"], 1);
    assert_eq!(
        body["service"],
        json!({"namespace": "default", "name": "lb"})
    );

    c.set_endpoints("lb", 8080, &[("198.18.2.12", true, "node-b")]);
    c.wait_for("the health check to report no local endpoints", || {
        health(&c).is_some_and(|(s, _)| s == 503)
    });
    // With no local endpoint, external traffic is dropped rather than sent elsewhere.
    c.wait_for("NodePort traffic to be dropped", || {
        c.connect(&nodeport).is_err()
    });
    let (status, _) = http_get(&c, &format!("{NODE_IP}:10256")).unwrap();
    assert_eq!(status, 200, "the proxy's own healthz");
}

fn http_get(c: &Cluster, target: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let target: std::net::SocketAddr = target.parse().unwrap();
    c.client.enter(move || {
        let mut s =
            std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(2))
                .ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .ok()?;
        s.write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    })
}

pub fn restart_removes_stale_service_rules_and_tampering_is_repaired(mode: Mode) {
    let mut c = Cluster::new();
    c.serve_backend("198.18.2.11", 8080);
    let keep = web_service(&c, "keep", json!({}));
    let gone = web_service(&c, "gone", json!({}));
    c.set_endpoints("keep", 8080, &[("198.18.2.11", true, "n")]);
    c.set_endpoints("gone", 8080, &[("198.18.2.11", true, "n")]);
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    let (keep_vip, gone_vip) = (
        format!("{}:80", cluster_ip(&keep)),
        format!("{}:80", cluster_ip(&gone)),
    );
    c.wait_for("both Services to answer", || {
        c.connect(&keep_vip).is_ok() && c.connect(&gone_vip).is_ok()
    });
    assert!(mode.programs(&c, "gone"));

    c.stop_proxy();
    c.api
        .delete(&berth_tests::apiserver::SERVICES, "default", "gone")
        .unwrap();
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    c.wait_for("the deleted Service's rules to be removed", || {
        !mode.programs(&c, "gone")
    });
    assert!(c.connect(&keep_vip).is_ok());
    let err = c.connect(&gone_vip);
    assert!(err.is_err(), "the deleted Service no longer answers");

    // Someone removes our rules: the proxy notices and rewrites them.
    mode.tamper(&c);
    c.wait_for("the rules to be restored", || c.connect(&keep_vip).is_ok());
    if mode == Mode::Iptables {
        let rules = c.node.exec("iptables-save", &["-t", "nat"]);
        assert_eq!(
            rules.matches("-j KUBE-SERVICES").count(),
            2,
            "one jump each from PREROUTING and OUTPUT:\n{rules}"
        );
    }

    // --cleanup removes everything any mode programmed.
    c.stop_proxy();
    c.node.exec(
        env!("CARGO_BIN_EXE_berth-proxy"),
        &["--cleanup", "--hostname-override", "node-a"],
    );
    assert!(
        !c.node.exec("iptables-save", &[]).contains("KUBE-"),
        "iptables rules left"
    );
    assert!(
        !c.node
            .exec("nft", &["list", "tables"])
            .contains("kube-proxy"),
        "nftables table left"
    );
}

/// Endpoint objects of an EndpointSlice: (address, zone hint).
fn hinted(eps: &[(&str, &str)]) -> serde_json::Value {
    eps.iter()
        .map(|(ip, zone)| {
            json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-b",
            "zone": zone, "hints": {"forZones": [{"name": zone}]}})
        })
        .collect()
}

pub fn topology_hints_keep_traffic_in_the_nodes_zone(mode: Mode) {
    let mut c = Cluster::new();
    for ip in ["198.18.2.11", "198.18.2.12", "198.18.2.13"] {
        c.serve_backend(ip, 8080);
    }
    let svc = web_service(&c, "zonal", json!({"trafficDistribution": "PreferClose"}));
    c.set_slice(
        "zonal",
        "IPv4",
        "TCP",
        8080,
        hinted(&[
            ("198.18.2.11", "z1"),
            ("198.18.2.12", "z2"),
            ("198.18.2.13", "z2"),
        ]),
    );
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    let vip = format!("{}:80", cluster_ip(&svc));
    c.wait_for("the ClusterIP to answer", || c.connect(&vip).is_ok());
    // The node (node-a) is labelled topology.kubernetes.io/zone=z1.
    let seen = c.distribution(&vip, 30);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["198.18.2.11:8080"],
        "only the endpoint hinted for z1: {seen:?}"
    );

    // The node moves to z2: the endpoints hinted for z2 take over.
    let mut node = c
        .api
        .get(&berth_tests::apiserver::NODES, "", "node-a")
        .unwrap();
    node["metadata"]["labels"]["topology.kubernetes.io/zone"] = json!("z2");
    c.api
        .update(&berth_tests::apiserver::NODES, "", node)
        .unwrap();
    c.wait_for("traffic to follow the node's new zone", || {
        let seen = c.distribution(&vip, 20);
        seen.keys().cloned().collect::<Vec<_>>() == ["198.18.2.12:8080", "198.18.2.13:8080"]
    });

    // No endpoint is hinted for the node's zone: hints are ignored, every endpoint serves.
    c.set_slice(
        "zonal",
        "IPv4",
        "TCP",
        8080,
        hinted(&[("198.18.2.11", "z1"), ("198.18.2.13", "z3")]),
    );
    c.wait_for("every endpoint to serve when none is hinted for z2", || {
        c.distribution(&vip, 20).len() == 2
    });
}

pub fn udp_flow_moves_to_the_new_endpoint_when_its_endpoint_is_removed(mode: Mode) {
    let mut c = Cluster::new();
    // Both servers keep running: only clearing the flow's conntrack entry moves it.
    c.serve_backend_udp("198.18.2.11", 5353);
    c.serve_backend_udp("198.18.2.12", 5353);
    let svc = c.create_service(
        "dns",
        json!({"ports": [{"name": "http", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}),
    );
    let endpoint = |ip: &str| json!([{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-b"}]);
    c.set_slice("dns", "IPv4", "UDP", 5353, endpoint("198.18.2.11"));
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    let vip = std::net::SocketAddr::new(cluster_ip(&svc), 53);
    // One socket, so every datagram belongs to the same flow.
    let socket = c
        .client
        .enter(|| std::net::UdpSocket::bind("0.0.0.0:0").unwrap());
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let ask = || -> Option<String> {
        socket.send_to(b"who", vip).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    };
    c.wait_for("the UDP Service to answer", || {
        ask().as_deref() == Some("198.18.2.11:5353")
    });
    c.set_slice("dns", "IPv4", "UDP", 5353, endpoint("198.18.2.12"));
    c.wait_for("the client's flow to reach the new endpoint", || {
        ask().as_deref() == Some("198.18.2.12:5353")
    });
}

pub fn ipv6_cluster_ip_reaches_an_ipv6_backend(mode: Mode) {
    let mut c = Cluster::new_dual_stack();
    c.serve_backend("198.18.2.11", 8080);
    c.serve_backend("fd00:18:2::11", 8080);
    let svc = web_service(
        &c,
        "ds",
        json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"]}),
    );
    let ips: Vec<IpAddr> = svc["spec"]["clusterIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip.as_str().unwrap().parse().unwrap())
        .collect();
    let v6 = *ips
        .iter()
        .find(|ip| ip.is_ipv6())
        .expect("an IPv6 ClusterIP");
    let one = |ip: &str| json!([{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-b"}]);
    c.set_slice("ds", "IPv4", "TCP", 8080, one("198.18.2.11"));
    c.set_slice("ds", "IPv6", "TCP", 8080, one("fd00:18:2::11"));
    c.start_proxy(&["--proxy-mode", mode.flag()]);
    let vip6 = std::net::SocketAddr::new(v6, 80).to_string();
    c.wait_for("the IPv6 ClusterIP to answer", || c.connect(&vip6).is_ok());
    let (backend, _) = c.connect(&vip6).unwrap();
    assert_eq!(backend, "[fd00:18:2::11]:8080");
    let (backend, _) = c.connect(&format!("{}:80", cluster_ip(&svc))).unwrap();
    assert_eq!(backend, "198.18.2.11:8080", "IPv4 is served beside it");
}
