//! bridge + host-local in test-made namespaces: the "host" is a namespace too.

mod common;

use common::libcni::Driver;
use common::*;
use serde_json::{Value, json};

struct Net {
    host: TestNetns,
    data: TempDir,
    bridge: String,
}

impl Net {
    fn new() -> Self {
        Net {
            host: TestNetns::new("h"),
            data: TempDir::new("data"),
            bridge: "br-test".into(),
        }
    }

    fn conf(&self, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "testnet",
            "type": "bridge",
            "bridge": self.bridge,
            "isDefaultGateway": true,
            "ipam": {"type": "host-local", "dataDir": self.data.path().join("ipam"), "ranges": [[{"subnet": "10.99.0.0/24"}]]}
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn inv(&self, cmd: &'static str, cid: &str, pod: &TestNetns) -> Invocation {
        Invocation::new(cmd, cid, &pod.path(), &our_bin_dir(), Some(&self.host))
    }

    /// A successful bridge ADD; its result.
    fn add(&self, cid: &str, pod: &TestNetns, conf: &Value) -> Value {
        self.inv("ADD", cid, pod).run("bridge", conf).ok().clone()
    }

    fn leases(&self) -> std::collections::BTreeMap<String, String> {
        leases(&self.data.path().join("ipam"), "testnet")
    }
}

#[test]
fn two_pods_talk_to_each_other_and_to_the_host() {
    let net = Net::new();
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    let conf = net.conf("1.1.0", json!({}));
    let ra = net.add("ctr-a", &a, &conf);
    let rb = net.add("ctr-b", &b, &conf);
    let ip_a = result_ip(&ra, 0);
    let ip_b = result_ip(&rb, 0);
    assert_ne!(ip_a, ip_b);
    assert_eq!(ra["ips"][0]["gateway"], "10.99.0.1");
    assert_eq!(ra["interfaces"][2]["sandbox"], a.path());
    assert_eq!(ra["routes"][0]["dst"], "0.0.0.0/0");
    assert!(ping(&a, &ip_b), "pod a cannot reach pod b");
    assert!(ping(&b, &ip_a), "pod b cannot reach pod a");
    assert!(ping(&a, "10.99.0.1"), "pod cannot reach the host side");
    assert!(ping(&net.host, &ip_a), "host cannot reach the pod");
    assert_eq!(net.host.sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");

    let mut check_conf = conf.clone();
    check_conf["prevResult"] = ra.clone();
    net.inv("CHECK", "ctr-a", &a)
        .run("bridge", &check_conf)
        .ok();

    let host_veth = ra["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(links(&net.host).contains(&host_veth));
    net.inv("DEL", "ctr-a", &a).run("bridge", &conf).ok();
    assert!(
        !links(&net.host).contains(&host_veth),
        "host veth left behind"
    );
    assert!(!links(&a).contains(&"eth0".to_string()));
    assert_eq!(net.leases().len(), 1, "lease of ctr-a not released");
    // DEL is idempotent.
    net.inv("DEL", "ctr-a", &a).run("bridge", &conf).ok();
    net.inv("DEL", "ctr-b", &b).run("bridge", &conf).ok();
    assert!(net.leases().is_empty());
}

#[test]
fn check_fails_when_the_address_was_removed() {
    let net = Net::new();
    let a = TestNetns::new("a");
    let conf = net.conf("1.0.0", json!({}));
    let r = net.add("c", &a, &conf);
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    net.inv("CHECK", "c", &a).run("bridge", &check).ok();
    a.sh(&format!(
        "ip addr del {} dev eth0",
        r["ips"][0]["address"].as_str().unwrap()
    ));
    let out = net.inv("CHECK", "c", &a).run("bridge", &check);
    assert!(out.err_text().contains("missing"), "{}", out.raw);
    net.inv("DEL", "c", &a).run("bridge", &conf).ok();
}

#[test]
fn del_succeeds_after_the_netns_is_gone() {
    let net = Net::new();
    let mut a = TestNetns::new("a");
    let conf = net.conf("1.0.0", json!({"ipMasq": true}));
    let r = net.add("gone", &a, &conf);
    let veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let path = a.path();
    a.delete();
    assert!(wait_for(std::time::Duration::from_secs(5), || !links(
        &net.host
    )
    .contains(&veth)));
    let inv = Invocation::new("DEL", "gone", &path, &our_bin_dir(), Some(&net.host));
    inv.run("bridge", &conf).ok();
    assert!(net.leases().is_empty());
    assert!(!net.host.sh("iptables -t nat -S").contains("gone"));
    // And with no netns at all.
    Invocation::new("DEL", "gone", "", &our_bin_dir(), Some(&net.host))
        .run("bridge", &conf)
        .ok();
}

#[test]
fn results_follow_the_requested_version() {
    let net = Net::new();
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let pod = TestNetns::new("v");
        let cid = format!("ver{i}");
        let conf = net.conf(v, json!({}));
        let r = net.add(&cid, &pod, &conf);
        assert_eq!(r["cniVersion"], *v);
        let has_version = r["ips"][0].get("version").is_some();
        assert_eq!(has_version, v.starts_with("0."), "{v}: {r}");
        net.inv("DEL", &cid, &pod).run("bridge", &conf).ok();
    }
}

#[test]
fn ip_masq_with_iptables_and_nftables_is_removed_on_del() {
    let net = Net::new();
    let a = TestNetns::new("a");
    let conf = net.conf("1.0.0", json!({"ipMasq": true}));
    net.inv("ADD", "masq-ipt", &a).run("bridge", &conf).ok();
    let rules = net.host.sh("iptables -t nat -S");
    assert!(
        rules.contains("MASQUERADE") && rules.contains("id: \\\"masq-ipt\\\""),
        "{rules}"
    );
    net.inv("DEL", "masq-ipt", &a).run("bridge", &conf).ok();
    let rules = net.host.sh("iptables -t nat -S");
    assert!(
        !rules.contains("masq-ipt") && !rules.contains("CNI-"),
        "{rules}"
    );

    let conf = net.conf(
        "1.0.0",
        json!({"ipMasq": true, "ipMasqBackend": "nftables"}),
    );
    let r = net.add("masq-nft", &a, &conf);
    let ip = result_ip(&r, 0);
    let ruleset = net.host.sh("nft list table inet cni_plugins_masquerade");
    assert!(
        ruleset.contains(&format!("ip saddr {ip}")) && ruleset.contains("masquerade"),
        "{ruleset}"
    );
    net.inv("DEL", "masq-nft", &a).run("bridge", &conf).ok();
    let ruleset = net.host.sh("nft list table inet cni_plugins_masquerade");
    assert!(!ruleset.contains("masquerade comment"), "{ruleset}");
}

#[test]
fn bridge_and_port_options_are_applied() {
    let net = Net::new();
    let a = TestNetns::new("a");
    let conf = net.conf(
        "1.1.0",
        json!({"mtu": 1400, "hairpinMode": true, "promiscMode": true, "macspoofchk": true,
               "runtimeConfig": {"mac": "02:11:22:33:44:55"}}),
    );
    let r = net.add("opts", &a, &conf);
    let veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert_eq!(r["interfaces"][2]["mac"], "02:11:22:33:44:55");
    assert!(a.sh("ip link show eth0").contains("mtu 1400"));
    assert!(a.sh("ip link show eth0").contains("02:11:22:33:44:55"));
    let br = net.host.sh("ip -d link show br-test");
    assert!(br.contains("PROMISC") && br.contains("mtu 1400"), "{br}");
    assert!(
        net.host
            .sh(&format!("ip -d link show {veth}"))
            .contains("hairpin on")
    );
    let spoof = net.host.sh("nft list table bridge cni_plugins_macspoofchk");
    assert!(
        spoof.contains(&veth) && spoof.contains("02:11:22:33:44:55"),
        "{spoof}"
    );
    net.inv("DEL", "opts", &a).run("bridge", &conf).ok();
    assert!(
        !net.host
            .sh("nft list table bridge cni_plugins_macspoofchk")
            .contains(&veth)
    );
}

/// Whether this kernel has bridge VLAN filtering (some minimal kernels lack it).
fn kernel_has_vlan_filtering() -> bool {
    let probe = TestNetns::new("p");
    probe.ok(&[
        "ip",
        "link",
        "add",
        "probe0",
        "type",
        "bridge",
        "vlan_filtering",
        "1",
    ])
}

#[test]
fn vlan_access_and_trunk_ports() {
    let net = Net::new();
    let a = TestNetns::new("a");
    let conf = net.conf(
        "1.1.0",
        json!({"vlan": 42, "vlanTrunk": [{"minID": 100, "maxID": 101}], "preserveDefaultVlan": false}),
    );
    let out = net.inv("ADD", "vlan", &a).run("bridge", &conf);
    if !kernel_has_vlan_filtering() {
        // The error names the option and nothing is left behind.
        assert!(out.err_text().contains("vlan"), "{}", out.raw);
        assert!(net.leases().is_empty());
        assert!(!links(&a).contains(&"eth0".to_string()));
        return;
    }
    let r = out.ok().clone();
    let veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(
        net.host
            .sh("ip -d link show br-test")
            .contains("vlan_filtering 1")
    );
    let vlans = net.host.sh(&format!("bridge vlan show dev {veth}"));
    assert!(
        vlans.contains("42 PVID Egress Untagged") && vlans.contains("100") && vlans.contains("101"),
        "{vlans}"
    );
    assert!(
        !vlans
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == "1")),
        "default vlan kept: {vlans}"
    );
    net.inv("DEL", "vlan", &a).run("bridge", &conf).ok();
}

#[test]
fn disable_container_interface_and_dad() {
    let net = Net::new();
    let a = TestNetns::new("a");
    let conf = net.conf("1.1.0", json!({"disableContainerInterface": true}));
    net.inv("ADD", "down", &a).run("bridge", &conf).ok();
    assert!(a.sh("ip link show eth0").contains("state DOWN"));
    net.inv("DEL", "down", &a).run("bridge", &conf).ok();

    let mut conf = net.conf("1.1.0", json!({}));
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.99.0.0/24"}], [{"subnet": "fd99::/64"}]]);
    let b = TestNetns::new("b");
    let r = net.add("dual", &b, &conf);
    assert_eq!(r["ips"].as_array().unwrap().len(), 2);
    assert_eq!(
        b.sh("cat /proc/sys/net/ipv6/conf/eth0/accept_dad").trim(),
        "0"
    );
    let v6 = result_ip(&r, 1);
    let c = TestNetns::new("c");
    net.inv("ADD", "dual2", &c).run("bridge", &conf).ok();
    assert!(ping(&c, &v6), "IPv6 between pods");
    net.inv("DEL", "dual", &b).run("bridge", &conf).ok();
    net.inv("DEL", "dual2", &c).run("bridge", &conf).ok();
}

#[test]
fn chain_through_libcni_driver_with_cached_result() {
    let net = Net::new();
    let a = TestNetns::new("a");
    let cache = TempDir::new("cache");
    let conflist = json!({
        "cniVersion": "1.0.0", "name": "testnet",
        "plugins": [
            net.conf("1.0.0", json!({})),
            {"type": "loopback"}
        ]
    });
    let driver = Driver::new(&conflist, cache.path().to_path_buf());
    let inv = net.inv("ADD", "chain", &a);
    let r = driver.add(&inv).ok().clone();
    // loopback passes the bridge's result through unchanged.
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    assert!(a.sh("ip link show lo").contains("UP"));
    driver.check(&inv).ok();
    driver.del(&inv).ok();
    assert!(net.leases().is_empty());
    assert!(!a.sh("ip link show lo").contains(",UP"));
}

#[test]
fn unknown_cni_args_are_rejected_unless_ignored() {
    let net = Net::new();
    let a = TestNetns::new("a");
    let conf = net.conf("1.0.0", json!({}));
    let mut add = net.inv("ADD", "args", &a);
    add.cni_args = "K8S_POD_NAMESPACE=default;MAC=0a:58:0a:63:00:09".into();
    let out = add.run("bridge", &conf);
    assert_eq!(
        out.err_text().trim(),
        r#"ARGS: unknown args ["K8S_POD_NAMESPACE=default"]"#,
        "{}",
        out.raw
    );
    assert!(!links(&a).contains(&"eth0".to_string()));
    assert!(net.leases().is_empty());
    add.cni_args = format!("IgnoreUnknown=true;{}", add.cni_args);
    let result = add.run("bridge", &conf).ok().clone();
    assert_eq!(result["interfaces"][2]["mac"], "0a:58:0a:63:00:09");
    net.inv("DEL", "args", &a).run("bridge", &conf).ok();
}

#[test]
fn bad_input_leaves_nothing_behind() {
    let net = Net::new();
    let a = TestNetns::new("a");
    let not_netns = net.data.path().join("plain-file");
    std::fs::write(&not_netns, "x").unwrap();
    let conf = net.conf("1.0.0", json!({}));
    let inv = Invocation::new(
        "ADD",
        "bad",
        not_netns.to_str().unwrap(),
        &our_bin_dir(),
        Some(&net.host),
    );
    let out = inv.run("bridge", &conf);
    assert_eq!(out.err_code(), 4);
    assert!(out.err_text().contains("CNI_NETNS"), "{}", out.raw);

    // Overlap with a host route: the subnet is routed via another interface.
    net.host.sh("ip link add other0 type veth peer name other1 && ip link set other0 up && ip route add 10.99.0.128/25 dev other0 && ip route add 10.0.0.0/8 dev other0");
    assert!(
        net.host
            .sh("ip route")
            .contains("10.99.0.128/25 dev other0")
    );
    let out = net.inv("ADD", "bad", &a).run("bridge", &conf);
    assert_eq!(out.err_code(), 7);
    assert!(
        out.err_text().contains("overlaps host route"),
        "{}",
        out.raw
    );
    assert!(!links(&net.host).iter().any(|l| l.starts_with("veth")));
    assert!(!links(&a).contains(&"eth0".to_string()));
    // Only the broader route left: allowed, the bridge's connected route wins.
    net.host.sh("ip route del 10.99.0.128/25 dev other0");
    net.inv("ADD", "bad", &a).run("bridge", &conf).ok();
    net.inv("DEL", "bad", &a).run("bridge", &conf).ok();
    net.host.sh("ip link del other0");

    // Exhausted range: /30 has one address besides the gateway.
    let mut small = conf.clone();
    small["ipam"]["ranges"] = json!([[{"subnet": "10.98.0.0/30"}]]);
    net.inv("ADD", "first", &a).run("bridge", &small).ok();
    let b = TestNetns::new("b");
    let out = net.inv("ADD", "second", &b).run("bridge", &small);
    assert!(
        out.err_text().contains("no IP addresses available"),
        "{}",
        out.raw
    );
    assert!(!links(&b).contains(&"eth0".to_string()));
    net.inv("DEL", "first", &a).run("bridge", &small).ok();

    for (stdin, code, needle) in [
        (json!("{not json"), 6, "decode"),
        (
            json!({"cniVersion": "9.0.0", "name": "n", "type": "bridge"}),
            1,
            "9.0.0",
        ),
        (json!({"cniVersion": "1.0.0", "type": "bridge"}), 7, "name"),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "vlan": 9999}),
            7,
            "vlan",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}),
            7,
            "ipam",
        ),
    ] {
        let stdin = if let Value::String(s) = &stdin {
            Value::String(s.clone())
        } else {
            stdin
        };
        let out = raw_run(&net, &a, &stdin);
        assert_eq!(out.err_code(), code, "{stdin}: {}", out.raw);
        assert!(
            out.err_text().to_lowercase().contains(needle),
            "{stdin}: {}",
            out.raw
        );
    }
    assert!(net.leases().is_empty());
    assert!(!links(&net.host).iter().any(|l| l.starts_with("veth")));
}

/// Runs bridge ADD with stdin given verbatim (strings are sent unquoted).
fn raw_run(net: &Net, pod: &TestNetns, stdin: &Value) -> Outcome {
    let text = match stdin {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    net.inv("ADD", "raw", pod)
        .run_raw("bridge", text.as_bytes())
}

#[test]
fn gratuitous_arp_announces_the_pod() {
    let net = Net::new();
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    let conf = net.conf("1.0.0", json!({}));
    // The first ADD creates the bridge and its gateway address.
    net.inv("ADD", "garp-a", &a).run("bridge", &conf).ok();
    net.host.sh("sysctl -qw net.ipv4.conf.br-test.arp_accept=1");
    let r = net.add("garp-b", &b, &conf);
    let ip = result_ip(&r, 0);
    let mac = r["interfaces"][2]["mac"].as_str().unwrap().to_string();
    // No traffic is sent to or from the pod: only its announcement can teach the host.
    assert!(
        wait_for(std::time::Duration::from_secs(5), || net
            .host
            .sh(&format!("ip neigh show {ip}"))
            .contains(&mac)),
        "host never learned {ip} at {mac}: {}",
        net.host.sh("ip neigh")
    );
    net.inv("DEL", "garp-a", &a).run("bridge", &conf).ok();
    net.inv("DEL", "garp-b", &b).run("bridge", &conf).ok();
}

#[test]
fn gc_and_status_reach_host_local_through_bridge() {
    let net = Net::new();
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    let cache = TempDir::new("cache");
    let conflist = json!({"cniVersion": "1.1.0", "name": "testnet", "plugins": [net.conf("1.1.0", json!({}))]});
    let driver = Driver::new(&conflist, cache.path().to_path_buf());
    driver.add(&net.inv("ADD", "live", &a)).ok();
    driver.add(&net.inv("ADD", "stale", &b)).ok();
    driver
        .gc(
            &Invocation::new("GC", "", "", &our_bin_dir(), Some(&net.host)),
            &[("live", "eth0")],
        )
        .ok();
    let left: Vec<String> = net.leases().into_values().collect();
    assert_eq!(left, ["live\r\neth0"]);

    let status = Invocation::new("STATUS", "", "", &our_bin_dir(), Some(&net.host));
    status.run("bridge", &net.conf("1.1.0", json!({}))).ok();
    let mut broken = net.conf("1.1.0", json!({}));
    let blocker = net.data.path().join("blocker");
    std::fs::write(&blocker, "not a directory").unwrap();
    broken["ipam"]["dataDir"] = json!(blocker);
    assert_eq!(status.run("bridge", &broken).err_code(), 50);
    // STATUS and GC need cniVersion 1.1.0.
    assert_eq!(
        status
            .run("bridge", &net.conf("1.0.0", json!({})))
            .err_code(),
        1
    );
    driver.del(&net.inv("DEL", "live", &a)).ok();
}

#[test]
fn hundred_parallel_bridge_adds_get_distinct_working_addresses() {
    let net = Net::new();
    let pods: Vec<TestNetns> = (0..100).map(|_| TestNetns::new("p")).collect();
    let conf = std::sync::Arc::new(net.conf("1.0.0", json!({})));
    let handles: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let inv = net.inv("ADD", &format!("par-{i}"), pod);
            let conf = conf.clone();
            std::thread::spawn(move || {
                inv.run("bridge", &conf).ok()["ips"][0]["address"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    let mut addrs: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 100);
    // Every pod is wired: the first and the last can reach the gateway.
    assert!(ping(&pods[0], "10.99.0.1") && ping(&pods[99], "10.99.0.1"));
    assert_eq!(
        net.host
            .sh("ip -o addr show dev br-test")
            .matches("10.99.0.1/24")
            .count(),
        1
    );
    for (i, pod) in pods.iter().enumerate() {
        net.inv("DEL", &format!("par-{i}"), pod)
            .run("bridge", &conf)
            .ok();
    }
    assert!(net.leases().is_empty());
    assert!(!links(&net.host).iter().any(|l| l.starts_with("veth")));
}

#[test]
fn force_address_replaces_a_conflicting_bridge_address() {
    let net = Net::new();
    let a = TestNetns::new("a");
    net.host.sh("ip link add br-test type bridge && ip addr add 10.99.0.200/24 dev br-test && ip link set br-test up");
    let conf = net.conf("1.0.0", json!({}));
    let out = net.inv("ADD", "force", &a).run("bridge", &conf);
    assert!(out.err_text().contains("forceAddress"), "{}", out.raw);
    assert!(net.leases().is_empty() && !links(&a).contains(&"eth0".to_string()));
    let forced = net.conf("1.0.0", json!({"forceAddress": true}));
    net.inv("ADD", "force", &a).run("bridge", &forced).ok();
    let addrs = net.host.sh("ip -o -4 addr show dev br-test");
    assert!(
        addrs.contains("10.99.0.1/24") && !addrs.contains("10.99.0.200"),
        "{addrs}"
    );
    net.inv("DEL", "force", &a).run("bridge", &forced).ok();
}
