//! Resolving config.json paths inside the container's rootfs. Every lookup goes
//! through openat2(RESOLVE_IN_ROOT), so a symlink in the image (`/etc -> /`,
//! `/dev/x -> /host/file`) can never lead outside the rootfs; the resulting fd is
//! then used as a mount target through its /proc/self/fd path.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use crate::oci::error::{Context, Result};

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// `path` made relative (leading `/` and `.` dropped); `..` stays for the kernel
/// to clamp at the root.
pub fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| {
            !matches!(
                c,
                Component::RootDir | Component::CurDir | Component::Prefix(_)
            )
        })
        .collect()
}

/// Opens `path` (interpreted inside `root`) as an O_PATH fd.
pub fn open_in_root(root: BorrowedFd, path: &Path) -> nix::Result<OwnedFd> {
    let rel = relative(path);
    if rel.as_os_str().is_empty() {
        return openat2(root, ".", how(OFlag::O_PATH | OFlag::O_DIRECTORY));
    }
    openat2(root, &rel, how(OFlag::O_PATH))
}

/// Creates every missing directory of `path` inside `root` and returns the last
/// one opened O_PATH. Dangling symlinks on the way are followed (inside the root)
/// and their targets created, as a shell's `mkdir -p` would within a chroot.
pub fn mkdir_all_in_root(root: BorrowedFd, path: &Path, mode: u32) -> Result<OwnedFd> {
    const MAX_LINKS: usize = 40;
    let dir_how = || how(OFlag::O_PATH | OFlag::O_DIRECTORY);
    let open_dir = |p: &Path| {
        openat2(
            root,
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            dir_how(),
        )
    };
    let mut remaining: VecDeque<OsString> = relative(path)
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut walked = PathBuf::new();
    let mut current = open_dir(&walked).context(|| "opening the rootfs".to_string())?;
    let mut links = 0;
    while let Some(name) = remaining.pop_front() {
        if name == ".." {
            walked.pop();
            current = open_dir(&walked)
                .context(|| format!("opening {} in the rootfs", walked.display()))?;
            continue;
        }
        let candidate = walked.join(&name);
        match open_dir(&candidate) {
            Ok(fd) => current = fd,
            Err(Errno::ENOENT) => match nix::fcntl::readlinkat(current.as_fd(), name.as_os_str()) {
                Ok(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Errno::ELOOP)
                            .context(|| format!("resolving {} in the rootfs", path.display()));
                    }
                    let target = PathBuf::from(target);
                    if target.is_absolute() {
                        walked = PathBuf::new();
                        current = open_dir(&walked).context(|| "opening the rootfs".to_string())?;
                    }
                    for component in relative(&target).components().rev() {
                        remaining.push_front(component.as_os_str().to_os_string());
                    }
                    continue;
                }
                Err(_) => {
                    match nix::sys::stat::mkdirat(
                        current.as_fd(),
                        name.as_os_str(),
                        Mode::from_bits_truncate(mode),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(e).context(|| {
                                format!("creating {} in the rootfs", candidate.display())
                            });
                        }
                    }
                    current = open_dir(&candidate)
                        .context(|| format!("opening {} in the rootfs", candidate.display()))?;
                }
            },
            Err(e) => {
                return Err(e).context(|| format!("opening {} in the rootfs", candidate.display()));
            }
        }
        walked = candidate;
    }
    Ok(current)
}

/// Makes sure a mount target exists inside `root`: a directory, or an empty file
/// when the mount source is not a directory. Returns it opened O_PATH.
pub fn ensure_target(root: BorrowedFd, path: &Path, file: bool) -> Result<OwnedFd> {
    if !file {
        return mkdir_all_in_root(root, path, 0o755);
    }
    if let Ok(fd) = open_in_root(root, path) {
        return Ok(fd);
    }
    let rel = relative(path);
    let parent = mkdir_all_in_root(root, rel.parent().unwrap_or(Path::new("")), 0o755)?;
    let name = rel.file_name().unwrap_or_default();
    match nix::fcntl::openat(
        parent.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    ) {
        Ok(_) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e).context(|| format!("creating {} in the rootfs", path.display())),
    }
    open_in_root(root, path).context(|| format!("opening {} in the rootfs", path.display()))
}

/// The path through which the kernel reaches what `fd` refers to.
pub fn proc_fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.path().join("escape")).unwrap();
        symlink("/", root.path().join("up")).unwrap();
        let root_fd = std::fs::File::open(root.path()).unwrap();
        mkdir_all_in_root(root_fd.as_fd(), Path::new("/escape/x/y"), 0o755).unwrap();
        mkdir_all_in_root(root_fd.as_fd(), Path::new("/up/../../z"), 0o755).unwrap();
        // Absolute symlink targets are taken relative to the root, never the host.
        assert!(
            root.path()
                .join(outside.path().strip_prefix("/").unwrap())
                .join("x/y")
                .is_dir()
        );
        assert!(!outside.path().join("x").exists());
        assert!(root.path().join("z").is_dir());
    }

    #[test]
    fn file_targets_are_created_as_files() {
        let root = tempfile::tempdir().unwrap();
        let root_fd = std::fs::File::open(root.path()).unwrap();
        ensure_target(root_fd.as_fd(), Path::new("etc/resolv.conf"), true).unwrap();
        assert!(root.path().join("etc/resolv.conf").is_file());
    }

    #[test]
    fn relative_drops_root_and_dots() {
        assert_eq!(relative(Path::new("/a/./b")), PathBuf::from("a/b"));
    }
}
