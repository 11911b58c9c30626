//! The root-only helpers of the support library: network namespaces and
//! private mount namespaces. Root.

use berth_tests::mountns::{in_private_mount_ns, private_mount_ns_command};
use berth_tests::netns::NetNs;
use berth_tests::tempdir::{TempDir, mounts_under};

#[test]
fn netns_is_created_and_deleted_on_drop() {
    let netns = NetNs::new().unwrap();
    let path = netns.path();
    assert!(path.exists());
    let out = netns.command("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    drop(netns);
    assert!(!path.exists());
}

#[test]
fn mounts_in_a_private_namespace_do_not_reach_the_host() {
    let dir = TempDir::new("berth-mountns").unwrap();
    let target = dir.path().to_path_buf();
    let seen_inside = in_private_mount_ns(|| {
        nix::mount::mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        mounts_under(&target)
    })
    .unwrap();
    assert_eq!(seen_inside, [dir.path()]);
    assert!(mounts_under(dir.path()).is_empty());

    let status = private_mount_ns_command("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(mounts_under(dir.path()).is_empty());
}

#[test]
fn tempdir_drop_unmounts_what_is_left_beneath_it() {
    let unmounted = in_private_mount_ns(|| {
        let dir = TempDir::new("berth-unmount").unwrap();
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let tmpfs = Some("tmpfs");
        nix::mount::mount(
            tmpfs,
            &sub,
            tmpfs,
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::write(sub.join("f"), "x").unwrap();
        assert_eq!(mounts_under(dir.path()), [sub]);
        let path = dir.path().to_path_buf();
        drop(dir);
        !path.exists()
    })
    .unwrap();
    assert!(unmounted);
}
