//! The base layer of every test image: Debian's statically linked busybox
//! with a symlink per applet and the few files a container expects.

use super::Layer;
use anyhow::Context;
use std::process::Command;

/// Where Debian's busybox-static installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      app:x:1000:1000:app:/home/app:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n";

/// A root file system layer: /bin/busybox, a symlink per applet (from
/// `busybox --list-full`), /etc/passwd and /etc/group (users root, app 1000,
/// nobody; groups root, app 1000, extra 2000, nogroup), and the usual empty
/// directories (/tmp sticky and world-writable).
pub fn busybox_layer() -> anyhow::Result<Layer> {
    let binary = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (apt install busybox-static)"))?;
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {BUSYBOX} --list-full"))?;
    anyhow::ensure!(list.status.success(), "{BUSYBOX} --list-full failed");

    let mut layer = Layer::new();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "home/app",
    ] {
        layer = layer.dir(dir, 0o755);
    }
    for dir in ["dev", "proc", "sys", "var", "run", "mnt"] {
        layer = layer.dir(dir, 0o755);
    }
    layer = layer.dir("tmp", 0o1777).file("bin/busybox", binary, 0o755);
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_end_matches('/');
        if !applet.is_empty() && applet != "bin/busybox" {
            layer = layer.symlink(applet, BUSYBOX);
        }
    }
    Ok(layer
        .file("etc/passwd", PASSWD, 0o644)
        .file("etc/group", GROUP, 0o644)
        .file("etc/hostname", "berth-test\n", 0o644)
        .file("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n", 0o644)
        .file("etc/resolv.conf", "", 0o644))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Entry;

    #[test]
    fn has_the_shell_and_common_applets() {
        let layer = busybox_layer().unwrap();
        let symlinks: Vec<&str> = layer
            .entries()
            .iter()
            .filter_map(|e| match e {
                Entry::Symlink { path, target } if target == BUSYBOX => Some(path.as_str()),
                _ => None,
            })
            .collect();
        for applet in [
            "bin/sh",
            "bin/ls",
            "bin/cat",
            "bin/true",
            "sbin/ip",
            "usr/bin/id",
        ] {
            assert!(symlinks.contains(&applet), "{applet} missing");
        }
        assert!(layer.entries().iter().any(|e| e.path() == "bin/busybox"));
    }

    #[test]
    fn shell_runs_from_an_applied_rootfs() {
        let dir = crate::tempdir::TempDir::new("berth-busybox").unwrap();
        busybox_layer().unwrap().apply_to(dir.path()).unwrap();
        let out = Command::new(dir.join("bin/busybox"))
            .args(["sh", "-c", "echo ok"])
            .output();
        assert_eq!(out.unwrap().stdout, b"ok\n");
        let passwd = std::fs::read_to_string(dir.join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:x:0:0:"));
    }
}
