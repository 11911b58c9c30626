//! Interoperability with the reference plugins in /usr/lib/cni (spec up to
//! 1.0.0), driven the way libcni drives plugins: same conflists, same
//! environment, chained prevResult, cached result on CHECK and DEL.

mod common;

use std::path::{Path, PathBuf};

use common::libcni::Driver;
use common::*;
use serde_json::{Value, json};

fn conflist(version: &str, data: &Path) -> Value {
    json!({
        "cniVersion": version, "name": "interop",
        "plugins": [
            {"type": "bridge", "bridge": "br-io", "isDefaultGateway": true, "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.95.0.0/24"}]],
                      // An explicit gw: the reference bridge's CHECK cannot find
                      // routes whose gw it filled in itself.
                      "routes": [{"dst": "192.0.2.0/24", "gw": "10.95.0.1"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    })
}

/// One side of the comparison: its own host namespace, pod and data dir.
struct Side {
    host: TestNetns,
    pod: TestNetns,
    data: TempDir,
    cache: TempDir,
    bin: PathBuf,
}

impl Side {
    fn new(bin: PathBuf) -> Self {
        let host = TestNetns::new("ih");
        host.sh("ip link set lo up");
        Side {
            host,
            pod: TestNetns::new("ip"),
            data: TempDir::new("idata"),
            cache: TempDir::new("icache"),
            bin,
        }
    }

    fn driver(&self, version: &str) -> Driver {
        let mut d = Driver::new(
            &conflist(version, self.data.path()),
            self.cache.path().to_path_buf(),
        );
        d.capability_args.insert(
            "portMappings".into(),
            json!([{"hostPort": 18081, "containerPort": 81, "protocol": "tcp"}]),
        );
        d
    }

    fn inv(&self) -> Invocation {
        Invocation::new(
            "ADD",
            "interop-ctr",
            &self.pod.path(),
            &self.bin,
            Some(&self.host),
        )
    }
}

/// The parts of a result that must match between implementations; MACs and
/// the random host veth name may differ.
fn shape(r: &Value) -> Value {
    let ifaces: Vec<Value> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let name = i["name"].as_str().unwrap();
            let name = if name.starts_with("veth") { "veth*" } else { name };
            json!({"name": name, "sandbox": i["sandbox"], "has_mac": i["mac"].as_str().is_some_and(|m| m.len() == 17)})
        })
        .collect();
    json!({"cniVersion": r["cniVersion"], "interfaces": ifaces, "ips": r["ips"], "routes": r["routes"], "dns": r["dns"]})
}

/// Masquerade rules as iptables prints them (chain names derive from
/// network name and container id in both implementations).
fn masq_rules(host: &TestNetns) -> Vec<String> {
    let mut rules: Vec<String> = host
        .sh("iptables -t nat -S")
        .lines()
        .filter(|l| l.contains("CNI-") && !l.contains("HOSTPORT") && !l.contains("CNI-DN-"))
        .map(str::to_string)
        .collect();
    rules.sort();
    rules
}

#[test]
fn same_conflist_gives_the_same_result_and_rules_as_the_reference() {
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let ours = Side::new(our_bin_dir());
        let theirs = Side::new(REFERENCE_BIN_DIR.into());
        let (d_ours, d_theirs) = (ours.driver(version), theirs.driver(version));
        let r_ours = d_ours.add(&ours.inv()).ok().clone();
        let r_theirs = d_theirs.add(&theirs.inv()).ok().clone();
        let mut expected = shape(&r_theirs);
        // Sandboxes are the pods' own paths.
        expected["interfaces"][2]["sandbox"] = json!(ours.pod.path());
        assert_eq!(shape(&r_ours), expected, "cniVersion {version}");
        assert_eq!(
            masq_rules(&ours.host),
            masq_rules(&theirs.host),
            "cniVersion {version}"
        );
        for side in [&ours, &theirs] {
            assert!(
                ping(&side.pod, "10.95.0.1"),
                "pod to host, cniVersion {version}"
            );
            assert!(
                side.pod
                    .sh("ip route")
                    .contains("192.0.2.0/24 via 10.95.0.1")
            );
        }
        if version != "0.3.1" {
            // The reference portmap's CHECK (v1.1.1) also demands an IPv6
            // chain for an IPv4-only pod, so only ours is checked here.
            d_ours.check(&ours.inv()).ok();
        }
        d_ours.del(&ours.inv()).ok();
        d_theirs.del(&theirs.inv()).ok();
        assert!(masq_rules(&ours.host).is_empty() && masq_rules(&theirs.host).is_empty());
        assert!(leases(ours.data.path(), "interop").is_empty());
    }
}

/// A bin dir mixing implementations: `bridge` and `portmap` from one,
/// `host-local` and `loopback` from the other.
fn mixed_bin_dir(dir: &TempDir, main: &Path, ipam: &Path) -> PathBuf {
    for (name, from) in [
        ("bridge", main),
        ("portmap", main),
        ("host-local", ipam),
        ("loopback", ipam),
    ] {
        std::os::unix::fs::symlink(from.join(name), dir.path().join(name)).unwrap();
    }
    dir.path().to_path_buf()
}

#[test]
fn plugins_delegate_across_implementations() {
    let ours = our_bin_dir();
    let reference = PathBuf::from(REFERENCE_BIN_DIR);
    for (main, ipam) in [(&ours, &reference), (&reference, &ours)] {
        let bins = TempDir::new("mix");
        let side = Side::new(mixed_bin_dir(&bins, main, ipam));
        let driver = side.driver("1.0.0");
        let r = driver.add(&side.inv()).ok().clone();
        assert_eq!(
            r["ips"][0]["address"], "10.95.0.2/24",
            "{main:?} over {ipam:?}"
        );
        assert!(ping(&side.pod, "10.95.0.1"));
        if main == &ours {
            // See above: the reference portmap cannot CHECK IPv4-only pods.
            driver.check(&side.inv()).ok();
        }
        driver.del(&side.inv()).ok();
        assert!(leases(side.data.path(), "interop").is_empty());
    }
}

#[test]
fn our_plugins_clean_up_what_the_reference_plugins_made() {
    let side = Side::new(REFERENCE_BIN_DIR.into());
    let driver = side.driver("1.0.0");
    driver.add(&side.inv()).ok();
    assert!(!masq_rules(&side.host).is_empty());
    // The operator swaps the bin dir; DEL now runs our binaries on the cached result.
    let mut inv = side.inv();
    inv.path = our_bin_dir();
    driver.del(&inv).ok();
    assert!(
        masq_rules(&side.host).is_empty(),
        "{:?}",
        masq_rules(&side.host)
    );
    assert!(!side.host.sh("iptables -t nat -S").contains("CNI-DN-"));
    assert!(leases(side.data.path(), "interop").is_empty());
    assert!(!links(&side.pod).contains(&"eth0".to_string()));
}

#[test]
fn version_answers_match_for_shared_versions() {
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        let ask = json!({"cniVersion": "1.0.0"});
        let ours = Invocation::new("VERSION", "", "", &our_bin_dir(), None)
            .run(plugin, &ask)
            .ok()
            .clone();
        let theirs = Invocation::new("VERSION", "", "", Path::new(REFERENCE_BIN_DIR), None)
            .run(plugin, &ask)
            .ok()
            .clone();
        assert_eq!(ours["cniVersion"], theirs["cniVersion"]);
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
            let has = |r: &Value| {
                r["supportedVersions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == v)
            };
            assert!(has(&ours) && has(&theirs), "{plugin} {v}");
        }
    }
}
