//! loopback brings lo up and down.

mod common;

use common::*;
use serde_json::json;

#[test]
fn lo_goes_up_on_add_and_down_on_del() {
    let pod = TestNetns::new("lo");
    let conf = json!({"cniVersion": "1.1.0", "name": "lo", "type": "loopback"});
    let inv = Invocation::new("ADD", "lo-1", &pod.path(), &our_bin_dir(), None);
    assert!(!pod.sh("ip link show lo").contains("UP,"));
    let out = inv.run("loopback", &conf).ok().clone();
    assert_eq!(out["interfaces"][0]["name"], "lo");
    assert!(
        out["ips"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["address"] == "127.0.0.1/8")
    );
    assert!(ping(&pod, "127.0.0.1"));
    inv.with_command("CHECK").run("loopback", &conf).ok();
    inv.with_command("DEL").run("loopback", &conf).ok();
    assert!(!pod.sh("ip link show lo").contains("UP,"));
    assert_ne!(inv.with_command("CHECK").run("loopback", &conf).code, 0);
    // DEL of a netns that is gone succeeds.
    Invocation::new(
        "DEL",
        "lo-1",
        "/run/netns/berth-cni-never-made",
        &our_bin_dir(),
        None,
    )
    .run("loopback", &conf)
    .ok();
}

#[test]
fn version_command_lists_spec_versions() {
    let out = Invocation::new("VERSION", "", "", &our_bin_dir(), None)
        .run("loopback", &json!({"cniVersion": "1.0.0"}));
    let v = out.ok();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "1.1.0")
    );
}
