//! Pod network namespaces: create, exists, remove (idempotent), in a
//! private mount namespace so the bind mounts never reach the host.

mod network_support;

use std::process::Command;

use berth_cri::sandbox::netns::{self, NetnsDir};
use network_support::{isolated, run};

#[test]
fn create_exists_remove() {
    isolated("create_exists_remove", || {
        let base = tempfile::tempdir()?;
        let dir = NetnsDir::new(base.path().join("netns"));
        let a = dir.create()?;
        let b = dir.create()?;
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("cni-") && name.len() == "cni-".len() + 36,
            "{name}"
        );
        assert!(netns::exists(&a) && netns::exists(&b));

        // A separate, empty network namespace: only lo, and not ours.
        let links = run(Command::new("nsenter")
            .arg(format!("--net={}", a.display()))
            .args(["ip", "-o", "link"]))?;
        assert_eq!(links.lines().count(), 1, "{links}");
        let ours = std::fs::metadata("/proc/self/ns/net")?;
        let theirs = std::fs::metadata(&a)?;
        use std::os::unix::fs::MetadataExt;
        assert_ne!(ours.ino(), theirs.ino());

        // The directory is a shared mount point, like iproute2 leaves it.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(dir.path().to_str().unwrap()))
            .expect("netns dir is a mount point");
        assert!(line.contains("shared:"), "{line}");

        netns::remove(&a)?;
        assert!(!netns::exists(&a));
        assert!(!a.exists());
        netns::remove(&a)?;
        assert!(netns::exists(&b), "removing one leaves the other");

        // A path left as a plain file (unmounted, e.g. after a reboot).
        let stale = dir.path().join("cni-stale");
        std::fs::write(&stale, "")?;
        assert!(!netns::exists(&stale));
        netns::remove(&stale)?;
        assert!(!stale.exists());
        netns::remove(&b)?;
        Ok(())
    });
}
