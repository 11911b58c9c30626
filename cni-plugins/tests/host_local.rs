//! host-local on its own: allocation order, static requests, leases layout, GC.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};

fn conf(data: &TempDir, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data.path());
    json!({"cniVersion": "1.1.0", "name": "hl", "type": "bridge", "ipam": ipam})
}

fn inv(cmd: &'static str, cid: &str) -> Invocation {
    // host-local never enters the netns; the path only has to be given.
    Invocation::new(cmd, cid, "/proc/self/ns/net", &our_bin_dir(), None)
}

fn addr(out: &Value, i: usize) -> String {
    out["ips"][i]["address"].as_str().unwrap().to_string()
}

#[test]
fn hundred_parallel_adds_get_distinct_addresses() {
    let data = Arc::new(TempDir::new("par"));
    let c = Arc::new(conf(
        &data,
        json!({"ranges": [[{"subnet": "10.50.0.0/24"}]]}),
    ));
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                addr(
                    inv("ADD", &format!("par-{i}")).run("host-local", &c).ok(),
                    0,
                )
            })
        })
        .collect();
    let mut got: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 100);
    assert_eq!(leases(data.path(), "hl").len(), 100);
}

#[test]
fn leases_use_the_reference_layout_and_round_robin() {
    let data = TempDir::new("rr");
    let c = conf(
        &data,
        json!({"ranges": [[{"subnet": "10.51.0.0/29", "rangeStart": "10.51.0.2", "rangeEnd": "10.51.0.4"}]],
                                "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    let first = inv("ADD", "rr-1").run("host-local", &c).ok().clone();
    assert_eq!(addr(&first, 0), "10.51.0.2/29");
    assert_eq!(first["ips"][0]["gateway"], "10.51.0.1");
    assert_eq!(first["routes"][0]["dst"], "0.0.0.0/0");
    let lease = std::fs::read_to_string(data.path().join("hl/10.51.0.2")).unwrap();
    assert_eq!(lease, "rr-1\r\neth0");
    assert_eq!(
        std::fs::read_to_string(data.path().join("hl/last_reserved_ip.0")).unwrap(),
        "10.51.0.2"
    );
    // Released addresses are not reused before the range wraps.
    inv("DEL", "rr-1").run("host-local", &c).ok();
    assert_eq!(
        addr(inv("ADD", "rr-2").run("host-local", &c).ok(), 0),
        "10.51.0.3/29"
    );
    assert_eq!(
        addr(inv("ADD", "rr-3").run("host-local", &c).ok(), 0),
        "10.51.0.4/29"
    );
    assert_eq!(
        addr(inv("ADD", "rr-4").run("host-local", &c).ok(), 0),
        "10.51.0.2/29"
    );
    let out = inv("ADD", "rr-5").run("host-local", &c);
    assert!(
        out.err_text().contains("no IP addresses available"),
        "{}",
        out.raw
    );
    assert_eq!(leases(data.path(), "hl").len(), 3);
}

#[test]
fn dual_stack_static_requests_and_release_by_ifname() {
    let data = TempDir::new("ds");
    let mut c = conf(
        &data,
        json!({"ranges": [[{"subnet": "10.52.0.0/24"}], [{"subnet": "fd52::/64"}]]}),
    );
    let out = inv("ADD", "ds-1").run("host-local", &c).ok().clone();
    assert_eq!(addr(&out, 0), "10.52.0.2/24");
    assert_eq!(addr(&out, 1), "fd52::2/64");
    // Static address through the "ips" capability and through CNI_ARGS.
    c["runtimeConfig"] = json!({"ips": ["10.52.0.77/24"]});
    let mut i = inv("ADD", "ds-2");
    i.ifname = "net1".into();
    let out = i.run("host-local", &c).ok().clone();
    assert_eq!(addr(&out, 0), "10.52.0.77/24");
    c.as_object_mut().unwrap().remove("runtimeConfig");
    let mut i3 = inv("ADD", "ds-3");
    i3.cni_args = "IgnoreUnknown=1;IP=10.52.0.77".into();
    let out = i3.run("host-local", &c);
    assert!(out.err_text().contains("not available"), "{}", out.raw);
    i3.cni_args = "IP=10.53.0.1".into();
    assert!(
        i3.run("host-local", &c)
            .err_text()
            .contains("not in any configured range")
    );
    assert_eq!(
        leases(data.path(), "hl").len(),
        4,
        "failed requests left leases"
    );
    // Release only the named interface of ds-2.
    let mut del = inv("DEL", "ds-2");
    del.ifname = "eth0".into();
    del.run("host-local", &c).ok();
    assert!(leases(data.path(), "hl").contains_key("10.52.0.77"));
    del.ifname = "net1".into();
    del.run("host-local", &c).ok();
    assert!(!leases(data.path(), "hl").contains_key("10.52.0.77"));
    // CHECK knows whether an attachment holds an address.
    inv("CHECK", "ds-1").run("host-local", &c).ok();
    assert_eq!(inv("CHECK", "ds-2").run("host-local", &c).err_code(), 3);
}

#[test]
fn gc_releases_leases_of_vanished_attachments() {
    let data = TempDir::new("gc");
    let c = conf(&data, json!({"ranges": [[{"subnet": "10.54.0.0/24"}]]}));
    for id in ["keep", "drop-1", "drop-2"] {
        inv("ADD", id).run("host-local", &c).ok();
    }
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    Invocation::new("GC", "", "", &our_bin_dir(), None)
        .run("host-local", &gc)
        .ok();
    let left: Vec<String> = leases(data.path(), "hl").into_values().collect();
    assert_eq!(left, ["keep\r\neth0"]);
}

#[test]
fn config_errors_name_the_field() {
    let data = TempDir::new("bad");
    for (ipam, needle) in [
        (json!({}), "ipam.ranges"),
        (
            json!({"ranges": [[{"subnet": "10.55.0.0/24", "rangeStart": "10.56.0.1"}]]}),
            "ipam.ranges[0][0].rangeStart",
        ),
        (
            json!({"ranges": [[{"subnet": "10.55.0.0/24"}], [{"subnet": "10.55.0.0/25"}]]}),
            "ipam.ranges[1]",
        ),
        (
            json!({"ranges": [[{"subnet": "10.55.0.0/24"}, {"subnet": "fd00::/64"}]]}),
            "ipam.ranges[0][1]",
        ),
        (json!({"ranges": [[{"subnet": "not-a-subnet"}]]}), "invalid"),
    ] {
        let out = inv("ADD", "bad").run("host-local", &conf(&data, ipam.clone()));
        assert_eq!(out.err_code(), 7, "{ipam}: {}", out.raw);
        assert!(out.err_text().contains(needle), "{ipam}: {}", out.raw);
    }
    assert!(leases(data.path(), "hl").is_empty());
}

#[test]
fn reference_plugin_reads_our_leases_and_we_read_its() {
    let data = TempDir::new("ref");
    let mut c = conf(&data, json!({"ranges": [[{"subnet": "10.57.0.0/24"}]]}));
    c["cniVersion"] = json!("1.0.0"); // the newest the reference plugins speak
    let ours = inv("ADD", "ours").run("host-local", &c).ok().clone();
    let mut theirs_inv = inv("ADD", "theirs");
    theirs_inv.path = REFERENCE_BIN_DIR.into();
    let theirs = theirs_inv.run("host-local", &c).ok().clone();
    assert_eq!(addr(&ours, 0), "10.57.0.2/24");
    assert_eq!(
        addr(&theirs, 0),
        "10.57.0.3/24",
        "the reference plugin must see our lease and resume after it"
    );
    // Each releases the other's lease.
    inv("DEL", "theirs").run("host-local", &c).ok();
    let mut del = inv("DEL", "ours");
    del.path = REFERENCE_BIN_DIR.into();
    del.run("host-local", &c).ok();
    assert!(leases(data.path(), "hl").is_empty());
}

#[test]
fn dns_comes_from_resolv_conf_and_routes_from_config() {
    let data = TempDir::new("dns");
    let resolv = data.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 192.0.2.53\nsearch svc.cluster.local cluster.local\noptions ndots:5\n",
    )
    .unwrap();
    let c = conf(
        &data,
        json!({"ranges": [[{"subnet": "10.58.0.0/24", "gateway": "10.58.0.254"}]], "resolvConf": resolv,
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.0.2.0/24", "gw": "10.58.0.9"}]}),
    );
    let out = inv("ADD", "dns").run("host-local", &c).ok().clone();
    assert_eq!(out["ips"][0]["gateway"], "10.58.0.254");
    assert_eq!(
        addr(&out, 0),
        "10.58.0.1/24",
        "the first address is free when the gateway is elsewhere"
    );
    assert_eq!(out["dns"]["nameservers"], json!(["192.0.2.53"]));
    assert_eq!(
        out["dns"]["search"],
        json!(["svc.cluster.local", "cluster.local"])
    );
    assert_eq!(out["dns"]["options"], json!(["ndots:5"]));
    assert_eq!(
        out["routes"][1],
        json!({"dst": "192.0.2.0/24", "gw": "10.58.0.9"})
    );
    let mut bad = c.clone();
    bad["ipam"]["resolvConf"] = json!(data.path().join("missing"));
    let out = inv("ADD", "dns2").run("host-local", &bad);
    assert!(out.err_text().contains("ipam.resolvConf"), "{}", out.raw);
    assert_eq!(leases(data.path(), "hl").len(), 1);
}

#[test]
fn unknown_cni_args_fail_like_the_reference_unless_ignored() {
    let data = TempDir::new("args");
    let mut c = conf(&data, json!({"ranges": [[{"subnet": "10.57.0.0/24"}]]}));
    // The newest version the reference plugins speak.
    c["cniVersion"] = json!("1.0.0");
    for bin_dir in [our_bin_dir(), "/usr/lib/cni".into()] {
        let mut i = inv("ADD", "args-1");
        i.path = bin_dir.clone();
        i.cni_args = "FOO=bar;IP=10.57.0.9;K8S_POD_NAME=p".into();
        let out = i.run("host-local", &c);
        assert_eq!(
            out.err_text().trim(),
            r#"ARGS: unknown args ["FOO=bar" "K8S_POD_NAME=p"]"#,
            "{}: {}",
            bin_dir.display(),
            out.raw
        );
        assert!(leases(data.path(), "hl").is_empty(), "rejected ADD leased");
        i.cni_args = "IgnoreUnknown=1;FOO=bar;IP=10.57.0.9".into();
        assert_eq!(addr(i.run("host-local", &c).ok(), 0), "10.57.0.9/24");
        i.with_command("DEL").run("host-local", &c).ok();
    }
}
