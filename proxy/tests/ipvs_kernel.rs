//! IPVS mode against the real kernel, no double: the startup check over generic
//! netlink, and the proxy binary in `--proxy-mode ipvs`. On a kernel without the
//! ip_vs module (these test machines) both must fail with an error that names it; on
//! one with IPVS the check must pass inside a fresh network namespace.

mod common;

use berth_proxy::ipvs::dummy::Links;
use berth_proxy::ipvs::{GenlSocket, IpvsError, IpvsKernel, open_kernel};
use common::{Cluster, NetNs};
use std::time::{Duration, Instant};

/// Whether this kernel can do IPVS, told without asking IPVS itself.
fn kernel_has_ipvs() -> bool {
    std::path::Path::new("/sys/module/ip_vs").exists()
        || std::process::Command::new("modinfo")
            .arg("ip_vs")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The transport against the kernel's generic netlink controller, which every kernel
/// has: a lookup answered with the family and an acknowledgement, and one refused.
#[test]
fn generic_netlink_transport_talks_to_the_real_controller() {
    let ns = NetNs::new("g");
    let (ctrl, missing) = ns.enter(|| {
        let mut sock = GenlSocket::open().unwrap();
        let ctrl = sock.resolve("nlctrl").unwrap();
        let missing = sock.resolve("no-such-family").unwrap();
        (ctrl, missing)
    });
    assert_eq!(ctrl, Some(0x10), "nlctrl is GENL_ID_CTRL");
    assert_eq!(missing, None);
}

#[test]
fn startup_check_names_the_missing_kernel_module() {
    let ns = NetNs::new("k");
    let result = ns.enter(|| open_kernel("rr").and_then(|mut k| k.services().map(|s| s.len())));
    if kernel_has_ipvs() {
        assert_eq!(
            result.unwrap(),
            0,
            "a new namespace has no virtual servers (the probe is gone)"
        );
        return;
    }
    let err = result.unwrap_err();
    assert!(matches!(err, IpvsError::Unavailable), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("ip_vs") && text.contains("\"IPVS\""),
        "the error must name the module and the family: {text}"
    );
}

#[test]
fn proxy_in_ipvs_mode_fails_at_start_without_ipvs() {
    if kernel_has_ipvs() {
        // Covered by the sync tests; here only the refusal is under test.
        return;
    }
    let mut cluster = Cluster::new();
    cluster.start_proxy(&["--proxy-mode", "ipvs"]);
    let mut child = cluster.proxy.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let log = cluster.proxy_log();
    assert!(
        log.contains("can't use the IPVS proxier") && log.contains("modprobe ip_vs"),
        "{log}"
    );
    // It failed before programming anything.
    assert!(!cluster.node.try_exec("ip", &["link", "show", "kube-ipvs0"]));
}

fn kernel_has_dummy() -> bool {
    std::path::Path::new("/sys/module/dummy").exists()
        || std::process::Command::new("modinfo")
            .arg("dummy")
            .output()
            .is_ok_and(|o| o.status.success())
}

#[test]
fn kube_ipvs0_is_made_as_a_dummy_or_refused_with_the_driver_named() {
    let ns = NetNs::new("d");
    let made = ns.enter(|| {
        let links = Links::open().unwrap();
        links.ensure_dummy().map_err(|e| e.to_string())
    });
    if kernel_has_dummy() {
        made.unwrap();
        let link = ns.exec("ip", &["-j", "-d", "link", "show", "kube-ipvs0"]);
        assert!(link.contains("\"info_kind\":\"dummy\""), "{link}");
        return;
    }
    let err = made.unwrap_err();
    assert!(
        err.contains("kube-ipvs0") && err.contains("modprobe dummy"),
        "{err}"
    );
    assert!(!ns.try_exec("ip", &["link", "show", "kube-ipvs0"]));
}

/// The proxy's main loop makes and drops the backend in async code; the rtnetlink
/// runtime inside must allow both.
#[test]
fn links_can_be_made_and_dropped_by_async_code() {
    let ns = NetNs::new("a");
    ns.enter(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let links = Links::open().unwrap();
            drop(links);
        });
    });
}
