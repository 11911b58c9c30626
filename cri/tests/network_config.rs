//! Choosing the network from the conf dir, reporting skipped files, the
//! NetworkReady condition and picking up changes.

mod network_support;

use berth_cri::network::{CniError, CniManager};
use network_support::{CniFixture, block_on};

#[test]
fn picks_the_first_valid_config_and_explains_skipped_ones() {
    let fx = CniFixture::new();
    fx.write_conf("00-broken.conflist", "{ not json");
    fx.write_conf(
        "05-empty.conflist",
        r#"{"cniVersion":"1.0.0","name":"e","plugins":[]}"#,
    );
    fx.write_conf("07-notype.conf", r#"{"cniVersion":"1.0.0","name":"n"}"#);
    fx.write_conf(
        "08-ignored.txt",
        r#"{"cniVersion":"1.0.0","name":"t","type":"bridge"}"#,
    );
    fx.write_conf(
        "10-single.conf",
        r#"{"cniVersion":"0.4.0","name":"single","type":"bridge"}"#,
    );
    fx.write_conf(
        "20-later.conflist",
        r#"{"cniVersion":"1.0.0","name":"later","plugins":[{"type":"bridge"}]}"#,
    );
    let manager = fx.manager();
    let report = manager.load_report();
    assert_eq!(report.selected, Some(fx.conf_dir.join("10-single.conf")));
    assert_eq!(report.network_name.as_deref(), Some("single"));
    let skipped: Vec<(String, &str)> = report
        .skipped
        .iter()
        .map(|s| {
            (
                s.path.file_name().unwrap().to_string_lossy().into_owned(),
                s.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert_eq!(skipped[0].0, "00-broken.conflist");
    assert!(skipped[0].1.contains("invalid JSON"), "{skipped:?}");
    assert_eq!(skipped[1].0, "05-empty.conflist");
    assert!(skipped[1].1.contains("no plugins"), "{skipped:?}");
    assert_eq!(skipped[2].0, "07-notype.conf");
    assert!(skipped[2].1.contains("type"), "{skipped:?}");

    // The single-plugin .conf is wrapped in a list of one.
    let network = manager.network().unwrap();
    assert_eq!(network.plugins.len(), 1);
    assert_eq!(network.plugins[0].plugin_type, "bridge");
    assert_eq!(network.cni_version, "0.4.0");
    assert!(block_on(manager.status()).ready);
}

#[test]
fn missing_config_is_not_ready_with_containerds_reason() {
    let fx = CniFixture::new();
    let manager = fx.manager();
    let status = block_on(manager.status());
    assert!(!status.ready);
    assert_eq!(status.reason, "NetworkPluginNotReady");
    assert_eq!(
        status.message,
        "Network plugin returns error: cni plugin not initialized"
    );
    assert_eq!(
        status.last_load_status,
        format!(
            "cni config load failed: no network config found in {}: cni plugin not initialized",
            fx.conf_dir.display()
        )
    );
    let err = block_on(manager.setup(&network_support::pod("a", Some(&fx.netns_dir)))).unwrap_err();
    assert!(matches!(err, CniError::NotInitialized), "{err}");

    // Only invalid files: the reasons are part of the load status.
    fx.write_conf("10-bad.conflist", r#"{"name":"x","cniVersion":"1.0.0"}"#);
    let status = block_on(manager.status());
    assert!(!status.ready);
    assert!(
        status
            .last_load_status
            .contains("10-bad.conflist: missing \"plugins\""),
        "{status:?}"
    );
}

#[test]
fn changes_in_the_conf_dir_are_picked_up() {
    let fx = CniFixture::new();
    let manager: CniManager = fx.manager();
    assert!(!block_on(manager.status()).ready);

    fx.write_conf("50-net.conflist", &fx.bridge_conflist("first", None));
    let status = block_on(manager.status());
    assert!(status.ready, "{status:?}");
    assert_eq!(status.last_load_status, "OK");
    assert_eq!(manager.network().unwrap().name, "first");

    // A file sorting earlier takes over.
    fx.write_conf("10-net.conflist", &fx.bridge_conflist("second", None));
    assert_eq!(manager.network().unwrap().name, "second");
    assert!(!manager.sync(), "nothing changed since the last load");

    std::fs::remove_file(fx.conf_dir.join("10-net.conflist")).unwrap();
    std::fs::remove_file(fx.conf_dir.join("50-net.conflist")).unwrap();
    assert!(!block_on(manager.status()).ready);
    let report = manager.reload();
    assert!(report.selected.is_none() && report.error.is_some());
}
