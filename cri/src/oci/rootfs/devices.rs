//! /dev inside the container: the default device nodes every runtime provides,
//! the spec's devices, and the standard symlinks.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::paths::{ensure_target, mkdir_all_in_root, proc_fd_path, relative};
use crate::oci::error::{Context, Result, invalid};

/// A device node to create: path inside the container, type, numbers, mode, owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// null, zero, full, random, urandom and tty, as runc creates them.
pub fn default_devices() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DeviceNode {
        path: PathBuf::from("/dev").join(name),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn from_spec(index: usize, device: &LinuxDevice) -> Result<DeviceNode> {
    let kind = match device.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(invalid(
                format!("linux.devices[{index}].type"),
                "\"a\" is only valid in cgroup rules",
            ));
        }
    };
    let number = |v: i64, what: &str| {
        u64::try_from(v).map_err(|_| {
            invalid(
                format!("linux.devices[{index}].{what}"),
                format!("negative: {v}"),
            )
        })
    };
    Ok(DeviceNode {
        path: device.path().clone(),
        kind,
        major: number(device.major(), "major")?,
        minor: number(device.minor(), "minor")?,
        mode: device.file_mode().unwrap_or(0o666) & 0o7777,
        uid: device.uid().unwrap_or(0),
        gid: device.gid().unwrap_or(0),
    })
}

/// Creates `node` inside `root`. In a user namespace mknod is not permitted, so the
/// host's node at the same path is bind-mounted instead (as runc does).
pub fn create(root: BorrowedFd, node: &DeviceNode, bind_from_host: bool) -> Result<()> {
    if bind_from_host {
        let target = ensure_target(root, &node.path, true)?;
        return nix::mount::mount(
            Some(&node.path),
            proc_fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context(|| format!("bind-mounting device {}", node.path.display()));
    }
    let rel = relative(&node.path);
    let parent = mkdir_all_in_root(root, rel.parent().unwrap_or(Path::new("")), 0o755)?;
    let name = rel.file_name().unwrap_or_default();
    let dev = nix::sys::stat::makedev(node.major, node.minor);
    let mode = Mode::from_bits_truncate(node.mode);
    let mknod = || nix::sys::stat::mknodat(parent.as_fd(), name, node.kind, mode, dev);
    match mknod() {
        Err(Errno::EEXIST) => {
            // An image may ship its own node or file there: the spec's device wins.
            nix::unistd::unlinkat(
                parent.as_fd(),
                name,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .context(|| format!("replacing {}", node.path.display()))?;
            mknod()
        }
        other => other,
    }
    .context(|| format!("mknod {}", node.path.display()))?;
    nix::unistd::fchownat(
        parent.as_fd(),
        name,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .context(|| format!("chown {}", node.path.display()))
}

/// /dev/fd, stdin, stdout, stderr, ptmx (and core when the kernel has kcore).
pub fn create_symlinks(root: BorrowedFd) -> Result<()> {
    let dev = mkdir_all_in_root(root, Path::new("/dev"), 0o755)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        if name == "ptmx" {
            // A ptmx node (or link) from the image would bypass the container's devpts.
            let _ =
                nix::unistd::unlinkat(dev.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        match nix::unistd::symlinkat(target, dev.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).context(|| format!("symlink /dev/{name}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_six_runc_devices() {
        let names: Vec<_> = default_devices()
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
    }

    #[test]
    fn spec_device_conversion_checks_numbers() {
        let dev: LinuxDevice =
            serde_json::from_str(r#"{"path":"/dev/fuse","type":"c","major":10,"minor":229}"#)
                .unwrap();
        let node = from_spec(0, &dev).unwrap();
        assert_eq!(
            (node.kind, node.major, node.minor, node.mode),
            (SFlag::S_IFCHR, 10, 229, 0o666)
        );
        let bad: LinuxDevice =
            serde_json::from_str(r#"{"path":"/dev/x","type":"c","major":-1,"minor":0}"#).unwrap();
        assert!(
            from_spec(2, &bad)
                .unwrap_err()
                .to_string()
                .starts_with("linux.devices[2].major")
        );
    }
}
