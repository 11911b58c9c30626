//! Switching the process's root to the prepared rootfs.

use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, fchdir, pivot_root};

use crate::oci::error::{Context, Result};

/// pivot_root with the old root stacked under the new one and then detached,
/// which needs no directory for the old root inside the image.
pub fn pivot(rootfs: &Path) -> Result<()> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let old_root = open("/", flags, Mode::empty()).context(|| "opening /".into())?;
    let new_root =
        open(rootfs, flags, Mode::empty()).context(|| format!("opening {}", rootfs.display()))?;
    fchdir(&new_root).context(|| format!("chdir {}", rootfs.display()))?;
    pivot_root(".", ".").context(|| format!("pivot_root {}", rootfs.display()))?;
    fchdir(&old_root).context(|| "chdir old root".into())?;
    // The old root must not propagate the detach to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context(|| "making the old root a slave".into())?;
    umount2(".", MntFlags::MNT_DETACH).context(|| "detaching the old root".into())?;
    chdir("/").context(|| "chdir /".into())
}

/// The --no-pivot fallback (e.g. on a ramfs root): move the rootfs over / and chroot.
pub fn move_root(rootfs: &Path) -> Result<()> {
    chdir(rootfs).context(|| format!("chdir {}", rootfs.display()))?;
    mount(
        Some(rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .context(|| format!("moving {} to /", rootfs.display()))?;
    chroot(".").context(|| "chroot".into())?;
    chdir("/").context(|| "chdir /".into())
}
