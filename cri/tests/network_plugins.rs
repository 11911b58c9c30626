//! CNI invocation semantics checked with recording script plugins: stdin
//! (name, cniVersion, prevResult, runtimeConfig), environment, order of
//! ADD/DEL, caching, CHECK, STATUS, GC, errors and timeouts.

mod network_support;

use std::collections::HashMap;
use std::time::Duration;

use berth_cri::network::{CniError, CniManager, INGRESS_BANDWIDTH_ANNOTATION, PodNetwork};
use berth_proto::runtime::v1 as cri;
use network_support::{CniFixture, block_on, canned_result, pod};
use serde_json::Value;

fn script_manager(fx: &CniFixture) -> CniManager {
    let mut settings = fx.settings(vec![fx.bin_dir.clone()]);
    // These plugins touch no namespace; the loopback network needs a real one.
    settings.loopback = false;
    settings.plugin_timeout = Duration::from_secs(1);
    CniManager::new(settings)
}

fn stdin_json(fx: &CniFixture, plugin: &str, command: &str) -> Value {
    serde_json::from_str(&fx.recorded(plugin, command, "stdin")).unwrap()
}

const THREE_PLUGINS: &str = r#"{"cniVersion":"1.0.0","name":"recnet","plugins":[
    {"type":"rec-a","capabilities":{"portMappings":true,"dns":true,"mac":true}},
    {"type":"rec-b","capabilities":{"io.kubernetes.cri.pod-annotations":true}},
    {"type":"rec-c","capabilities":{"bandwidth":true,"cgroupPath":true,"ips":false}}]}"#;

fn install_three(fx: &CniFixture) {
    fx.install_recording_plugin("rec-a", &canned_result("10.1.0.2"));
    fx.install_recording_plugin("rec-b", &canned_result("10.1.0.3"));
    fx.install_recording_plugin("rec-c", &canned_result("10.1.0.4"));
    fx.write_conf("10-rec.conflist", THREE_PLUGINS);
}

#[test]
fn runtime_config_carries_only_declared_capabilities() {
    let fx = CniFixture::new();
    install_three(&fx);
    let manager = script_manager(&fx);
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "pod-sb1".into(),
            uid: "uid-sb1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        port_mappings: vec![
            cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 80,
                host_port: 8080,
                host_ip: String::new(),
            },
            cri::PortMapping {
                protocol: cri::Protocol::Udp as i32,
                container_port: 53,
                host_port: 0,
                host_ip: String::new(),
            },
        ],
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        annotations: HashMap::from([(INGRESS_BANDWIDTH_ANNOTATION.to_string(), "1M".to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/pod1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut p = PodNetwork::from_sandbox_config(
        "sb1",
        Some(std::path::PathBuf::from("/proc/self/ns/net")),
        &config,
    )
    .unwrap();
    // Not from CRI, but a capability rec-c declares false.
    p.runtime.ips = vec!["10.1.0.9".into()];
    let setup = block_on(manager.setup(&p)).unwrap();

    let a = stdin_json(&fx, "rec-a", "ADD");
    let rc = a["runtimeConfig"].as_object().unwrap();
    assert_eq!(
        rc.keys().collect::<Vec<_>>(),
        vec!["dns", "portMappings"],
        "mac is declared but unset"
    );
    assert_eq!(
        rc["portMappings"],
        serde_json::json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
    );
    assert_eq!(rc["dns"]["searches"][0], "svc.cluster.local");
    assert_eq!(a["name"], "recnet");
    assert_eq!(a["cniVersion"], "1.0.0");
    assert!(
        a.get("prevResult").is_none(),
        "first plugin has no prevResult"
    );
    assert!(
        a.get("capabilities").is_some(),
        "plugin's own config is passed through"
    );

    let b = stdin_json(&fx, "rec-b", "ADD");
    assert_eq!(
        b["runtimeConfig"],
        serde_json::json!({"io.kubernetes.cri.pod-annotations": {INGRESS_BANDWIDTH_ANNOTATION: "1M"}})
    );
    assert_eq!(b["prevResult"]["ips"][0]["address"], "10.1.0.2/24");

    let c = stdin_json(&fx, "rec-c", "ADD");
    let rc = c["runtimeConfig"].as_object().unwrap();
    assert_eq!(
        rc.keys().collect::<Vec<_>>(),
        vec!["bandwidth", "cgroupPath"],
        "ips is declared false"
    );
    assert_eq!(rc["bandwidth"]["ingressRate"], 1_000_000);
    assert_eq!(rc["bandwidth"]["ingressBurst"], u64::from(u32::MAX));
    assert_eq!(c["prevResult"]["ips"][0]["address"], "10.1.0.3/24");

    let env = fx.recorded("rec-a", "ADD", "env");
    for line in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=sb1",
        "CNI_NETNS=/proc/self/ns/net",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-sb1;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=uid-sb1",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
    assert!(env.contains(&format!("CNI_PATH={}", fx.bin_dir.display())));
    // The last plugin's result is the network's.
    assert_eq!(setup.ips.unwrap().ip.to_string(), "10.1.0.4");
}

#[test]
fn del_runs_in_reverse_with_the_cached_result_and_survives_a_restart() {
    let fx = CniFixture::new();
    install_three(&fx);
    let p = pod("sb2", Some(std::path::Path::new("/proc/self/ns/net")));
    block_on(script_manager(&fx).setup(&p)).unwrap();
    let cache = fx.cache_dir.join("results/recnet-sb2-eth0");
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["result"]["ips"][0]["address"], "10.1.0.4/24");

    // A new manager (as after a daemon restart) finds the cached result.
    let manager = script_manager(&fx);
    block_on(manager.check(&p)).unwrap();
    for plugin in ["rec-a", "rec-b", "rec-c"] {
        assert_eq!(
            stdin_json(&fx, plugin, "CHECK")["prevResult"]["ips"][0]["address"],
            "10.1.0.4/24"
        );
    }
    block_on(manager.teardown(&p)).unwrap();
    let calls = fx.calls();
    assert_eq!(
        calls[calls.len() - 3..],
        ["rec-c DEL", "rec-b DEL", "rec-a DEL"].map(String::from)
    );
    assert_eq!(
        stdin_json(&fx, "rec-a", "DEL")["prevResult"]["ips"][0]["address"],
        "10.1.0.4/24"
    );
    assert!(!cache.exists(), "DEL drops the cache entry");

    // DEL again: no cached result, plugins are still called, no prevResult.
    block_on(manager.teardown(&p)).unwrap();
    assert!(stdin_json(&fx, "rec-a", "DEL").get("prevResult").is_none());
    // CHECK without a cached ADD result is an error naming the network.
    let err = block_on(manager.check(&p)).unwrap_err();
    assert!(matches!(err, CniError::NoCachedResult { .. }), "{err}");
}

#[test]
fn plugin_error_result_names_plugin_and_network_and_rolls_back() {
    let fx = CniFixture::new();
    install_three(&fx);
    std::fs::write(
        fx.bin_dir.join("rec-b.ADD.fail"),
        r#"{"cniVersion":"1.0.0","code":11,"msg":"no addresses left","details":"range 10.1.0.0/24 full"}"#,
    )
    .unwrap();
    let p = pod("sb3", Some(std::path::Path::new("/proc/self/ns/net")));
    let manager = script_manager(&fx);
    let err = block_on(manager.setup(&p)).unwrap_err();
    let CniError::Plugin {
        plugin,
        network,
        command,
        failure,
    } = &err
    else {
        panic!("unexpected error {err}");
    };
    assert_eq!(
        (plugin.as_str(), network.as_str(), *command),
        ("rec-b", "recnet", "ADD")
    );
    assert_eq!(failure.code(), Some(11));
    assert_eq!(
        err.to_string(),
        r#"plugin type="rec-b" name="recnet" failed (ADD): no addresses left; range 10.1.0.0/24 full"#
    );
    // Rollback: DEL of the whole chain, in reverse.
    assert_eq!(
        fx.calls(),
        [
            "rec-a ADD",
            "rec-b ADD",
            "rec-c DEL",
            "rec-b DEL",
            "rec-a DEL"
        ]
        .map(String::from)
    );
    assert!(!fx.cache_dir.join("results/recnet-sb3-eth0").exists());
}

#[test]
fn failed_add_is_undone_by_del_of_the_chain() {
    let fx = CniFixture::new();
    install_three(&fx);
    std::fs::write(fx.bin_dir.join("rec-c.ADD.fail"), "not json").unwrap();
    let p = pod("sb4", Some(std::path::Path::new("/proc/self/ns/net")));
    let err = block_on(script_manager(&fx).setup(&p)).unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"plugin type="rec-c" name="recnet" failed (ADD)"#),
        "{err}"
    );
    assert_eq!(
        fx.calls(),
        [
            "rec-a ADD",
            "rec-b ADD",
            "rec-c ADD",
            "rec-c DEL",
            "rec-b DEL",
            "rec-a DEL"
        ]
        .map(String::from)
    );
}

#[test]
fn hung_plugin_times_out_and_missing_plugin_is_named() {
    let fx = CniFixture::new();
    install_three(&fx);
    std::fs::write(fx.bin_dir.join("rec-a.ADD.sleep"), "").unwrap();
    let p = pod("sb5", Some(std::path::Path::new("/proc/self/ns/net")));
    let manager = script_manager(&fx);
    let err = block_on(manager.setup(&p)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(r#"type="rec-a""#) && text.contains("timed out"),
        "{text}"
    );

    std::fs::remove_file(fx.bin_dir.join("rec-a.ADD.sleep")).unwrap();
    std::fs::remove_file(fx.bin_dir.join("rec-b")).unwrap();
    let err = block_on(manager.setup(&p)).unwrap_err();
    assert!(
        matches!(&err, CniError::RollbackFailed { setup, .. } if matches!(**setup, CniError::PluginNotFound { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains(r#"failed to find plugin "rec-b""#),
        "{err}"
    );
}

#[test]
fn status_and_gc_of_a_1_1_0_network() {
    let fx = CniFixture::new();
    fx.install_recording_plugin("rec-a", &canned_result("10.2.0.2"));
    fx.write_conf(
        "10-v11.conflist",
        r#"{"cniVersion":"1.1.0","name":"v11","plugins":[{"type":"rec-a"}]}"#,
    );
    let manager = script_manager(&fx);
    let status = block_on(manager.status());
    assert!(status.ready, "{status:?}");
    assert!(fx.calls().contains(&"rec-a STATUS".to_string()));

    for id in ["live", "stale"] {
        block_on(manager.setup(&pod(id, Some(std::path::Path::new("/proc/self/ns/net"))))).unwrap();
    }
    block_on(manager.gc(&["live".to_string()])).unwrap();
    assert!(fx.cache_dir.join("results/v11-live-eth0").exists());
    assert!(
        !fx.cache_dir.join("results/v11-stale-eth0").exists(),
        "stale attachment DELeted"
    );
    let del_env = fx.recorded("rec-a", "DEL", "env");
    assert!(del_env.contains("CNI_CONTAINERID=stale"), "{del_env}");
    let gc = stdin_json(&fx, "rec-a", "GC");
    assert_eq!(
        gc["cni.dev/valid-attachments"],
        serde_json::json!([{"containerID": "live", "ifname": "eth0"}])
    );

    std::fs::write(
        fx.bin_dir.join("rec-a.STATUS.fail"),
        r#"{"cniVersion":"1.1.0","code":50,"msg":"plugin not available"}"#,
    )
    .unwrap();
    let status = block_on(manager.status());
    assert!(!status.ready);
    assert_eq!(status.reason, "NetworkPluginNotReady");
    assert!(
        status.message.contains("plugin not available"),
        "{status:?}"
    );
}

#[test]
fn check_is_refused_before_0_4_0_and_status_is_not_sent() {
    let fx = CniFixture::new();
    fx.install_recording_plugin(
        "rec-a",
        r#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.3.0.2/24"}]}"#,
    );
    fx.write_conf(
        "10-old.conf",
        r#"{"cniVersion":"0.3.1","name":"old","type":"rec-a"}"#,
    );
    let manager = script_manager(&fx);
    let p = pod("sb6", Some(std::path::Path::new("/proc/self/ns/net")));
    let setup = block_on(manager.setup(&p)).unwrap();
    assert!(setup.ips.is_none(), "no address on an interface named eth0");
    let err = block_on(manager.check(&p)).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not support the CHECK command"),
        "{err}"
    );
    assert!(block_on(manager.status()).ready);
    assert!(!fx.calls().iter().any(|c| c.ends_with("STATUS")));
    // Before 0.4.0, DEL gets no prevResult even though a result is cached.
    block_on(manager.teardown(&p)).unwrap();
    assert!(stdin_json(&fx, "rec-a", "DEL").get("prevResult").is_none());
}

#[test]
fn version_probe_of_a_reference_plugin() {
    let fx = CniFixture::new();
    let manager = fx.manager();
    let versions = block_on(manager.runner().version("bridge", "1.0.0")).unwrap();
    assert!(
        versions.supported_versions.contains(&"1.0.0".to_string()),
        "{versions:?}"
    );
    assert!(versions.supported_versions.contains(&"0.3.1".to_string()));
}
