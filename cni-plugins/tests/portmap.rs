//! portmap chained after bridge: host ports reach the pod from the host
//! namespace (its own address and localhost) and from other pods (hairpin).

mod common;

use common::libcni::Driver;
use common::*;
use serde_json::{Value, json};

fn conflist(data: &TempDir, backend: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "pmnet",
        "plugins": [
            {"type": "bridge", "bridge": "br-pm", "isGateway": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.97.0.0/24"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "backend": backend}
        ]
    })
}

fn host_ports_reach_the_pod(backend: &str) {
    let host = TestNetns::new("h");
    host.sh("ip link set lo up"); // as on a real host
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    let data = TempDir::new("pm");
    let cache = TempDir::new("cache");
    let mut driver = Driver::new(&conflist(&data, backend), cache.path().to_path_buf());
    driver.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
               {"hostPort": 15353, "containerPort": 53, "protocol": "udp"}]),
    );
    let inv_a = Invocation::new("ADD", "pm-a", &a.path(), &our_bin_dir(), Some(&host));
    let ra = driver.add(&inv_a).ok().clone();
    let pod_ip = result_ip(&ra, 0);
    let plain = Driver::new(&conflist(&data, backend), cache.path().to_path_buf());
    let inv_b = Invocation::new("ADD", "pm-b", &b.path(), &our_bin_dir(), Some(&host));
    plain.add(&inv_b).ok();

    let _server = TcpServer::start(&a, 80, "hello from pod a");
    assert_eq!(
        tcp_fetch(&host, &format!("{pod_ip}:80")).as_deref(),
        Some("hello from pod a"),
        "direct"
    );
    assert_eq!(
        tcp_fetch(&host, "10.97.0.1:18080").as_deref(),
        Some("hello from pod a"),
        "host address"
    );
    assert_eq!(
        tcp_fetch(&host, "127.0.0.1:18080").as_deref(),
        Some("hello from pod a"),
        "localhost"
    );
    assert_eq!(
        tcp_fetch(&b, "10.97.0.1:18080").as_deref(),
        Some("hello from pod a"),
        "other pod"
    );
    assert_eq!(
        tcp_fetch(&a, "10.97.0.1:18080").as_deref(),
        Some("hello from pod a"),
        "hairpin"
    );
    driver.check(&inv_a).ok();

    driver.del(&inv_a).ok();
    assert_eq!(
        tcp_fetch(&host, "10.97.0.1:18080"),
        None,
        "port still forwarded after DEL"
    );
    if backend == "iptables" {
        let rules = host.sh("iptables -t nat -S");
        assert!(
            !rules.contains("CNI-DN-") && !rules.contains("pm-a"),
            "{rules}"
        );
    } else {
        let rules = host.sh("nft list table inet cni_hostport");
        assert!(!rules.contains("dnat"), "{rules}");
    }
    plain.del(&inv_b).ok();
}

#[test]
fn host_ports_reach_the_pod_with_iptables() {
    host_ports_reach_the_pod("iptables");
}

#[test]
fn host_ports_reach_the_pod_with_nftables() {
    host_ports_reach_the_pod("nftables");
}

#[test]
fn iptables_rules_cover_udp_host_ip_and_check_notices_missing_rules() {
    let host = TestNetns::new("h");
    let a = TestNetns::new("a");
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": a.path()}],
        "ips": [{"address": "10.96.0.5/24", "interface": 0}]});
    let conf = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap", "prevResult": prev,
        "runtimeConfig": {"portMappings": [
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
            {"hostPort": 9000, "containerPort": 9, "protocol": "SCTP", "hostIP": "192.0.2.10"}]}});
    let inv = Invocation::new("ADD", "pm-rules", &a.path(), &our_bin_dir(), Some(&host));
    let out = inv.run("portmap", &conf).ok().clone();
    assert_eq!(out["ips"], prev["ips"], "portmap passes prevResult through");
    let rules = host.sh("iptables -t nat -S");
    assert!(
        rules.contains("-p udp -m udp --dport 5353 -j DNAT --to-destination 10.96.0.5:53"),
        "{rules}"
    );
    assert!(
        rules.contains(
            "-d 192.0.2.10/32 -p sctp -m sctp --dport 9000 -j DNAT --to-destination 10.96.0.5:9"
        ),
        "{rules}"
    );
    assert!(
        rules.contains("-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"),
        "{rules}"
    );
    inv.with_command("CHECK").run("portmap", &conf).ok();
    let chain = rules
        .lines()
        .find_map(|l| l.strip_prefix("-N CNI-DN-"))
        .unwrap()
        .to_string();
    host.sh(&format!("iptables -t nat -F CNI-DN-{chain}"));
    assert!(
        inv.with_command("CHECK")
            .run("portmap", &conf)
            .err_text()
            .contains("missing")
    );
    // A second ADD (retry) replaces rather than duplicates.
    inv.run("portmap", &conf).ok();
    inv.run("portmap", &conf).ok();
    assert_eq!(
        host.sh("iptables -t nat -S")
            .matches("--dport 5353 -j DNAT")
            .count(),
        1
    );
    inv.with_command("DEL").run("portmap", &conf).ok();
    assert!(!host.sh("iptables -t nat -S").contains("CNI-DN-"));

    let mut unchained = conf.clone();
    unchained.as_object_mut().unwrap().remove("prevResult");
    let out = inv.run("portmap", &unchained);
    assert!(out.err_text().contains("prevResult"), "{}", out.raw);
}

#[test]
fn ipv6_mappings_use_ip6tables_and_nftables() {
    let host = TestNetns::new("h");
    let a = TestNetns::new("a");
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": a.path()}],
        "ips": [{"address": "10.96.0.6/24", "interface": 0}, {"address": "fd96::6/64", "interface": 0}]});
    for backend in ["iptables", "nftables"] {
        let conf = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap", "prevResult": prev, "backend": backend,
            "runtimeConfig": {"portMappings": [{"hostPort": 8443, "containerPort": 443, "protocol": "tcp"}]}});
        let inv = Invocation::new("ADD", "pm-v6", &a.path(), &our_bin_dir(), Some(&host));
        inv.run("portmap", &conf).ok();
        let (v4, v6) = if backend == "iptables" {
            (
                host.sh("iptables -t nat -S"),
                host.sh("ip6tables -t nat -S"),
            )
        } else {
            let t = host.sh("nft list table inet cni_hostport");
            (t.clone(), t)
        };
        assert!(v4.contains("10.96.0.6:443"), "{backend}: {v4}");
        assert!(v6.contains("[fd96::6]:443"), "{backend}: {v6}");
        inv.with_command("CHECK").run("portmap", &conf).ok();
        inv.with_command("DEL").run("portmap", &conf).ok();
        let after =
            host.sh("iptables -t nat -S; ip6tables -t nat -S; nft list table inet cni_hostport");
        assert!(!after.contains(":443"), "{backend}: {after}");
    }
}

#[test]
fn iptables_options_conditions_external_mark_chain_and_no_snat() {
    let host = TestNetns::new("h");
    let a = TestNetns::new("a");
    host.sh("iptables -t nat -N MY-MARK");
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": a.path()}],
        "ips": [{"address": "10.96.0.7/24", "interface": 0}]});
    let mappings =
        json!({"portMappings": [{"hostPort": 7070, "containerPort": 70, "protocol": "tcp"}]});
    let conf = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap", "prevResult": prev, "runtimeConfig": mappings,
        "conditionsV4": ["!", "-s", "192.0.2.0/24"], "externalSetMarkChain": "MY-MARK"});
    let inv = Invocation::new("ADD", "pm-opts", &a.path(), &our_bin_dir(), Some(&host));
    inv.run("portmap", &conf).ok();
    let rules = host.sh("iptables -t nat -S");
    assert!(
        rules.contains(
            "-A PREROUTING ! -s 192.0.2.0/24 -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"
        ),
        "{rules}"
    );
    assert!(
        rules.contains("-s 10.96.0.7/32 -p tcp -m tcp --dport 7070 -j MY-MARK"),
        "{rules}"
    );
    assert!(!rules.contains("-N CNI-HOSTPORT-SETMARK"), "{rules}");
    inv.with_command("DEL").run("portmap", &conf).ok();

    let mut no_snat = conf.clone();
    no_snat["snat"] = json!(false);
    no_snat
        .as_object_mut()
        .unwrap()
        .remove("externalSetMarkChain");
    inv.run("portmap", &no_snat).ok();
    let rules = host.sh("iptables -t nat -S");
    assert!(
        rules.contains("--dport 7070 -j DNAT --to-destination 10.96.0.7:70"),
        "{rules}"
    );
    assert!(
        !rules
            .lines()
            .any(|l| l.contains("--dport 7070") && l.contains("SETMARK")),
        "{rules}"
    );
    inv.with_command("DEL").run("portmap", &no_snat).ok();
}

/// The conntrack entries towards UDP `port` in `ns`, as `conntrack -L` lists them.
fn udp_flows_to(ns: &TestNetns, port: u16) -> String {
    ns.sh(&format!("conntrack -L -p udp --dport {port} 2>/dev/null"))
}

#[test]
fn add_deletes_stale_udp_conntrack_entries_of_host_ports() {
    let host = TestNetns::new("h");
    // A real host tracks connections (kube-proxy's rules need it); the kernel
    // only tracks in a namespace once some rule asks for it.
    host.sh("ip link set lo up && iptables -A INPUT -m conntrack --ctstate INVALID -j DROP");
    let a = TestNetns::new("a");
    let (mapped, unmapped) = (16053u16, 16054u16);
    in_netns(&host, move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for port in [mapped, unmapped] {
            sock.send_to(b"query", ("127.0.0.1", port)).unwrap();
        }
    });
    for port in [mapped, unmapped] {
        assert!(
            wait_for(std::time::Duration::from_secs(5), || udp_flows_to(
                &host, port
            )
            .contains(&format!("dport={port}"))),
            "no conntrack entry towards {port}"
        );
    }
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": a.path()}],
        "ips": [{"address": "10.96.0.7/24", "interface": 0}]});
    let conf = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap", "prevResult": prev,
        "runtimeConfig": {"portMappings": [
            {"hostPort": mapped, "containerPort": 53, "protocol": "udp"}]}});
    let inv = Invocation::new("ADD", "pm-ct", &a.path(), &our_bin_dir(), Some(&host));
    inv.run("portmap", &conf).ok();
    let left = udp_flows_to(&host, mapped);
    assert!(!left.contains(&format!("dport={mapped}")), "{left}");
    let other = udp_flows_to(&host, unmapped);
    assert!(
        other.contains(&format!("dport={unmapped}")),
        "flows to other ports must stay: {other}"
    );
    inv.with_command("DEL").run("portmap", &conf).ok();
}
