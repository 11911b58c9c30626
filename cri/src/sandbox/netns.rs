//! Pod network namespaces, pinned by a bind mount at
//! `<dir>/cni-<uuid>` (default /var/run/netns) like containerd, so they
//! outlive every process in them and tools like `ip netns` see them.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

pub const DEFAULT_NETNS_DIR: &str = "/var/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{action} {path}: {source}")]
    Sys {
        action: &'static str,
        path: PathBuf,
        source: Errno,
    },
}

/// The directory holding pinned network namespaces.
#[derive(Debug, Clone)]
pub struct NetnsDir {
    dir: PathBuf,
}

impl Default for NetnsDir {
    fn default() -> Self {
        NetnsDir::new(DEFAULT_NETNS_DIR)
    }
}

impl NetnsDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NetnsDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates a new, empty network namespace and returns its path.
    pub fn create(&self) -> Result<PathBuf, NetnsError> {
        self.prepare_dir()?;
        let path = self.dir.join(format!("cni-{}", uuid::Uuid::new_v4()));
        fs::File::create(&path).map_err(|source| NetnsError::Io {
            action: "creating netns mount point",
            path: path.clone(),
            source,
        })?;
        let pinned = {
            let path = path.clone();
            // unshare() moves only the calling thread; a throwaway thread
            // keeps the caller's namespace untouched.
            std::thread::spawn(move || -> Result<(), NetnsError> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Sys {
                    action: "unshare(CLONE_NEWNET) for",
                    path: path.clone(),
                    source,
                })?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|source| NetnsError::Sys {
                    action: "bind-mounting new netns on",
                    path: path.clone(),
                    source,
                })
            })
            .join()
        };
        let outcome = pinned.unwrap_or_else(|_| {
            Err(NetnsError::Io {
                action: "creating netns",
                path: path.clone(),
                source: std::io::Error::other("netns thread panicked"),
            })
        });
        if let Err(e) = outcome {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(path)
    }

    /// Makes the directory a shared mount point, binding it onto itself
    /// first if needed (as iproute2 does), so that namespaces pinned later
    /// also appear in mount namespaces that were copied from this one.
    fn prepare_dir(&self) -> Result<(), NetnsError> {
        let dir = &self.dir;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| NetnsError::Io {
                action: "creating",
                path: dir.clone(),
                source,
            })?;
        let make_shared = || {
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        match make_shared() {
            Ok(()) => Ok(()),
            Err(Errno::EINVAL) => mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .and_then(|()| make_shared())
            .map_err(|source| NetnsError::Sys {
                action: "making a shared mount point of",
                path: dir.clone(),
                source,
            }),
            Err(source) => Err(NetnsError::Sys {
                action: "making shared",
                path: dir.clone(),
                source,
            }),
        }
    }
}

/// Unpins and deletes a network namespace. Missing or already unmounted
/// paths are fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Sys {
                action: "unmounting netns",
                path: path.to_path_buf(),
                source,
            });
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetnsError::Io {
            action: "removing netns",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Whether `path` is a pinned namespace (after a reboot the file may
/// be gone or be a plain file no longer mounted).
pub fn exists(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}
