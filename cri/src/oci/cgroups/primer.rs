//! Keeps the kernel's cgroup migration lock warm while a container is made.
//!
//! Every write to a `cgroup.procs` file takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing (unless the hierarchy is mounted
//! with `favordynmods`). Taking it from idle waits for a full RCU grace
//! period (`rcu_sync_enter`), 10–30 ms on a busy two-core node; a writer that
//! comes while another holds it, or within one grace period after the last
//! one let go, does not wait. The container's init is moved into its cgroups
//! late in CreateContainer, on the critical path. A primer started at the
//! beginning of the call pays that grace period in the background, while the
//! rootfs snapshot and the spec are made, and then keeps the lock from going
//! idle (one write every [`INTERVAL`]) until it is dropped, so the init's
//! migration finds it warm.
//!
//! What it writes is "0" into the `cgroup.procs` of the cgroup this process is
//! already in: the kernel takes the lock and moves nothing. (A pid that does
//! not exist is refused before the lock is taken, so it would not prime.)

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use super::hierarchy::Hierarchies;

/// Shorter than the shortest grace period (a few ticks at HZ=250 or more).
const INTERVAL: Duration = Duration::from_millis(2);

/// Primes until dropped.
pub struct MigrationPrimer {
    _stop: Sender<()>,
}

impl MigrationPrimer {
    /// Starts priming in a thread of its own; `None` when this process'
    /// own cgroup cannot be found under a mounted hierarchy (the migration
    /// then simply pays its grace period).
    pub fn start() -> Option<MigrationPrimer> {
        // The daemon stays in its cgroup: find the file once, not on every create.
        static OWN_PROCS: OnceLock<Option<PathBuf>> = OnceLock::new();
        let procs = OWN_PROCS.get_or_init(own_procs_file).clone()?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("cgroup-primer".into())
            .spawn(move || {
                loop {
                    if let Err(e) = std::fs::write(&procs, "0") {
                        tracing::debug!("priming cgroup migrations via {}: {e}", procs.display());
                        return;
                    }
                    match stopped.recv_timeout(INTERVAL) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .ok()?;
        Some(MigrationPrimer { _stop: stop })
    }
}

/// The `cgroup.procs` of the cgroup this process is in, on the first v1
/// hierarchy (all share the one lock), else on the cgroup2 mount.
fn own_procs_file() -> Option<PathBuf> {
    let hierarchies = Hierarchies::detect().ok()?;
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (mount, path) = match hierarchies.v1.iter().next() {
        Some((controller, mount)) => (mount, path_in(&membership, Some(controller))?),
        None => (hierarchies.unified.as_ref()?, path_in(&membership, None)?),
    };
    let file = mount
        .join(Path::new(path).strip_prefix("/").ok()?)
        .join("cgroup.procs");
    file.exists().then_some(file)
}

/// This process' path in the v1 hierarchy holding `controller`, or (None)
/// in the cgroup2 hierarchy, from /proc/self/cgroup
/// (`<id>:<controllers>:<path>` lines).
fn path_in<'a>(membership: &'a str, controller: Option<&str>) -> Option<&'a str> {
    membership.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = match controller {
            Some(wanted) => controllers.split(',').any(|c| c == wanted),
            None => controllers.is_empty(),
        };
        matches.then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBERSHIP: &str = "\
9:name=systemd:/
4:memory:/process_api/7e13
2:cpu,cpuacct:/kubepods
0::/
";

    #[test]
    fn finds_the_path_of_a_controller_or_of_cgroup2() {
        assert_eq!(
            path_in(MEMBERSHIP, Some("memory")),
            Some("/process_api/7e13")
        );
        assert_eq!(path_in(MEMBERSHIP, Some("cpuacct")), Some("/kubepods"));
        assert_eq!(path_in(MEMBERSHIP, Some("name=systemd")), Some("/"));
        assert_eq!(path_in(MEMBERSHIP, None), Some("/"));
        assert_eq!(path_in(MEMBERSHIP, Some("pids")), None);
        assert_eq!(path_in("4:memory:/a\n", None), None);
    }
}
