//! Network namespace handles: validating a CNI_NETNS path and running code
//! inside a namespace (the calling thread only; the plugins are single-threaded).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};

use crate::types::{CniError, CniResult, ErrorCode};

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: String,
}

impl NetNs {
    /// Opens `path` and checks that it is a network namespace (nsfs, or a
    /// /proc/<pid>/ns/net link). A missing path is "container unknown" (code 3).
    pub fn open(path: &str) -> CniResult<Self> {
        let file = File::open(path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorCode::UnknownContainer
            } else {
                ErrorCode::Io
            };
            CniError::new(code, format!("CNI_NETNS {path:?} cannot be opened")).with_details(e)
        })?;
        let fs =
            fstatfs(&file).map_err(|e| CniError::io(format!("CNI_NETNS {path:?}: statfs"), e))?;
        if fs.filesystem_type() != NSFS_MAGIC && fs.filesystem_type() != PROC_SUPER_MAGIC {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_NETNS {path:?} is not a network namespace"),
            ));
        }
        Ok(NetNs {
            file,
            path: path.to_string(),
        })
    }

    /// For DEL: the namespace at `path`, or `None` when there is nothing to
    /// clean up in it (no path given, or the namespace is already gone).
    pub fn open_for_del(path: &str) -> CniResult<Option<Self>> {
        if path.is_empty() {
            return Ok(None);
        }
        match Self::open(path) {
            Ok(ns) => Ok(Some(ns)),
            Err(e) if e.code == ErrorCode::UnknownContainer as u32 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The namespace this thread is in now.
    pub fn current() -> CniResult<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Moves this thread into the namespace until the guard drops.
    pub fn enter(&self) -> CniResult<NetNsGuard> {
        let back = NetNs::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            CniError::io(format!("cannot enter network namespace {}", self.path), e)
        })?;
        Ok(NetNsGuard { back })
    }

    /// Runs `f` inside the namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> CniResult<T>) -> CniResult<T> {
        let _guard = self.enter()?;
        f()
    }
}

/// Returns the thread to its previous namespace on drop.
pub struct NetNsGuard {
    back: NetNs,
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.back.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Continuing in the wrong namespace would change the wrong network.
            eprintln!(
                "fatal: cannot return to network namespace {}: {e}",
                self.back.path
            );
            std::process::abort();
        }
    }
}
