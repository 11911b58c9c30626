//! Running code in a private mount namespace so that mounts it makes never
//! reach the host.

use anyhow::Context;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use std::process::Command;

/// Runs `f` on a new thread that has its own mount namespace, with every
/// mount made private so nothing propagates back to the host. The namespace
/// goes away with the thread (unless something else holds it).
pub fn in_private_mount_ns<T, F>(f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<T> {
                // CLONE_NEWNS implies CLONE_FS, which a single thread may unshare.
                unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .context("making / rprivate")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in private mount namespace panicked"))?
    })
}

/// A command that runs `program` in a fresh private mount namespace (exec'd by
/// `unshare`, so the child's PID is the program's).
pub fn private_mount_ns_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--"])
        .arg(program);
    command
}
