//! Building the container's filesystem view inside its new mount namespace:
//! the rootfs bind, the spec's mounts, /dev, pivot_root, masked and read-only paths.

pub mod devices;
pub mod idmap;
pub mod mountinfo;
pub mod mounts;
pub mod paths;
pub mod pivot;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{FsFlags, fstatvfs};
use oci_spec::runtime::{Mount, Spec};

use crate::oci::error::{Context, Result};
use mounts::{MountOptions, parse_options, parse_propagation};
use paths::{ensure_target, open_in_root, proc_fd_path};

/// How the rootfs is to be set up (the parts not in the spec).
#[derive(Debug)]
pub struct RootfsConfig {
    pub rootfs: PathBuf,
    pub no_pivot: bool,
    /// In a new user namespace: no mknod, and locked mount flags must be kept.
    pub in_user_ns: bool,
    /// Whether the container has its own cgroup namespace (decides how cgroup
    /// mounts are made).
    pub cgroup_ns: bool,
    /// Idmapped trees the runtime prepared, moved into place here.
    pub idmapped: Vec<idmap::IdmappedMount>,
}

/// Everything up to (not including) pivot_root. Runs in the container's mount
/// namespace, before the hooks that must see the prepared rootfs.
/// `before_cgroup_mount` runs before the first cgroup mount: the process must
/// be in its cgroup (and cgroup namespace) by then.
pub fn prepare(
    spec: &Spec,
    config: &RootfsConfig,
    before_cgroup_mount: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    // By default nothing mounted from here on propagates back to the host. A
    // shared rootfsPropagation (bidirectional volumes) keeps our copies peers of
    // the host's; then the rootfs's parent mount is made private so that the
    // rootfs bind itself does not show up on the host (as runc does).
    let propagation = root_propagation(spec);
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
        .context(|| format!("setting the propagation of / ({propagation:?})"))?;
    if propagation.contains(MsFlags::MS_SHARED) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .context(|| "reading mountinfo".into())?;
        let parent = mountinfo::mount_point_of(&mountinfo::parse(&mounts), &config.rootfs);
        mount(
            None::<&str>,
            parent.as_str(),
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context(|| format!("making {parent} private"))?;
    }
    mount(
        Some(&config.rootfs),
        &config.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context(|| format!("bind-mounting rootfs {}", config.rootfs.display()))?;
    let root = open_dir(&config.rootfs)?;
    let mounts = spec.mounts().clone().unwrap_or_default();
    for (index, m) in mounts.iter().enumerate() {
        if matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")) {
            before_cgroup_mount()?;
        }
        mount_one(root.as_fd(), index, m, config).map_err(|e| match e {
            crate::oci::error::OciError::Io { context, source } => {
                crate::oci::error::OciError::Io {
                    context: format!("mounts[{index}] ({}): {context}", m.destination().display()),
                    source,
                }
            }
            crate::oci::error::OciError::Sys { context, source } => {
                crate::oci::error::OciError::Sys {
                    context: format!("mounts[{index}] ({}): {context}", m.destination().display()),
                    source,
                }
            }
            other => other,
        })?;
    }
    let dev_is_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev") && (m.typ().as_deref() == Some("bind") || has_bind(m))
    });
    if !dev_is_bound {
        let linux = spec.linux().as_ref();
        for node in devices::default_devices() {
            devices::create(root.as_fd(), &node, config.in_user_ns)?;
        }
        for (i, device) in linux
            .and_then(|l| l.devices().as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            devices::create(
                root.as_fd(),
                &devices::from_spec(i, device)?,
                config.in_user_ns,
            )?;
        }
        devices::create_symlinks(root.as_fd())?;
    }
    // A missing working directory is created, as runc does.
    if let Some(process) = spec.process() {
        paths::mkdir_all_in_root(root.as_fd(), process.cwd(), 0o755)?;
    }
    Ok(())
}

/// pivot_root (or the move fallback) and the rootfs propagation.
pub fn enter(spec: &Spec, config: &RootfsConfig) -> Result<()> {
    if config.no_pivot {
        pivot::move_root(&config.rootfs)?;
    } else {
        pivot::pivot(&config.rootfs)?;
    }
    let linux = spec.linux().as_ref();
    if let Some(propagation) = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .filter(|p| !p.is_empty())
    {
        if let Some(flags) = parse_propagation(propagation) {
            mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
                .context(|| format!("linux.rootfsPropagation {propagation}"))?;
        }
    }
    Ok(())
}

/// The last step, after sysctls are written: masked and read-only paths,
/// read-only root.
pub fn protect(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let root = open_dir(Path::new("/"))?;
    for path in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask(root.as_fd(), Path::new(path))?;
    }
    for path in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        make_readonly(root.as_fd(), Path::new(path))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let flags =
            locked_flags(&root)? | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .context(|| "remounting / read-only".into())?;
    }
    Ok(())
}

/// The propagation of / while the rootfs is built: linux.rootfsPropagation, by
/// default rslave.
fn root_propagation(spec: &Spec) -> MsFlags {
    spec.linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(parse_propagation)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC)
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| format!("opening {}", path.display()))
}

fn has_bind(m: &Mount) -> bool {
    m.options()
        .iter()
        .flatten()
        .any(|o| o == "bind" || o == "rbind")
}

fn mount_one(root: BorrowedFd, index: usize, m: &Mount, config: &RootfsConfig) -> Result<()> {
    let options = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    let destination = m.destination();
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(root, destination, &options, config);
    }
    if typ == "bind" || options.is_bind() {
        let source = m.source().clone().unwrap_or_default();
        let is_file = !source.is_dir();
        let target = ensure_target(root, destination, is_file)?;
        let rec = options.flags & MsFlags::MS_REC;
        match config.idmapped.iter().find(|t| t.index == index) {
            Some(idmapped) => idmap::attach(&idmapped.tree, &target)
                .context(|| format!("moving the idmapped {} into place", source.display()))?,
            None => mount(
                Some(&source),
                proc_fd_path(&target).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | rec,
                None::<&str>,
            )
            .context(|| format!("bind-mounting {}", source.display()))?,
        }
        let remount = options.bind_remount_flags();
        if !remount.is_empty() {
            remount_bind(root, destination, remount | rec, config.in_user_ns)?;
        }
    } else {
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let target = ensure_target(root, destination, false)?;
        let data = options.data_string();
        let result = mount(
            Some(&source),
            proc_fd_path(&target).as_str(),
            Some(typ),
            options.flags & !MsFlags::MS_REMOUNT,
            data.as_deref(),
        );
        match result {
            // sysfs can only be mounted by the owner of the network namespace:
            // fall back to the host's /sys, read-only, as runc does.
            Err(Errno::EPERM) if typ == "sysfs" => {
                mount(
                    Some("/sys"),
                    proc_fd_path(&target).as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .context(|| "bind-mounting /sys".into())?;
                remount_bind(
                    root,
                    destination,
                    MsFlags::MS_RDONLY | MsFlags::MS_REC | options.flags,
                    true,
                )?;
            }
            other => other.context(|| format!("mounting {typ} on {}", destination.display()))?,
        }
    }
    apply_propagation_and_attrs(root, destination, &options)
}

fn apply_propagation_and_attrs(
    root: BorrowedFd,
    destination: &Path,
    options: &MountOptions,
) -> Result<()> {
    if options.propagation.is_empty() && options.recursive.is_empty() {
        return Ok(());
    }
    let mounted = open_in_root(root, destination)
        .context(|| format!("reopening {}", destination.display()))?;
    for flags in &options.propagation {
        mount(
            None::<&str>,
            proc_fd_path(&mounted).as_str(),
            None::<&str>,
            *flags,
            None::<&str>,
        )
        .context(|| format!("setting propagation of {}", destination.display()))?;
    }
    if !options.recursive.is_empty() {
        set_recursive_attrs(&mounted, options.recursive)
            .context(|| format!("recursive mount attributes on {}", destination.display()))?;
    }
    Ok(())
}

/// mount_setattr(AT_RECURSIVE): attributes for the mount and everything under it.
fn set_recursive_attrs(
    fd: &OwnedFd,
    attrs: mounts::RecursiveAttrs,
) -> std::result::Result<(), Errno> {
    let attr = libc::mount_attr {
        attr_set: attrs.set,
        attr_clr: attrs.clear,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(fd, &attr, true)
}

/// mount_setattr(2) on the mount `fd` refers to (and, `recursive`, every mount
/// under it). Hand-written: neither nix nor libc wrap it.
fn mount_setattr(
    fd: &OwnedFd,
    attr: &libc::mount_attr,
    recursive: bool,
) -> std::result::Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: valid fd, NUL-terminated empty path and a mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// The flags a remount must keep: in a user namespace the kernel refuses to clear
/// nodev/nosuid/noexec/atime flags locked by the mount's owner.
fn locked_flags(mounted: &OwnedFd) -> Result<MsFlags> {
    let stat = fstatvfs(mounted).context(|| "statvfs".into())?;
    let f = stat.flags();
    let mut flags = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    Ok(flags)
}

fn remount_bind(
    root: BorrowedFd,
    destination: &Path,
    flags: MsFlags,
    keep_locked: bool,
) -> Result<()> {
    let mounted = open_in_root(root, destination)
        .context(|| format!("reopening {}", destination.display()))?;
    let locked = if keep_locked {
        locked_flags(&mounted)?
    } else {
        MsFlags::empty()
    };
    mount(
        None::<&str>,
        proc_fd_path(&mounted).as_str(),
        None::<&str>,
        flags | locked | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
        None::<&str>,
    )
    .context(|| format!("remounting {} ({flags:?})", destination.display()))
}

/// The cgroup filesystem(s) at `destination`. With a cgroup namespace each
/// hierarchy is mounted afresh (it then shows the container's cgroup as its
/// root); without one the container's own cgroup directories are bind-mounted.
fn mount_cgroup(
    root: BorrowedFd,
    destination: &Path,
    options: &MountOptions,
    config: &RootfsConfig,
) -> Result<()> {
    let host =
        std::fs::read_to_string("/proc/self/mountinfo").context(|| "reading mountinfo".into())?;
    let host = mountinfo::parse(&host);
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .context(|| "reading /proc/self/cgroup".into())?;
    let flags = options.flags
        & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
    let readonly = options.flags.contains(MsFlags::MS_RDONLY);
    let at = |sub: &str| destination.join(sub);
    let v1: Vec<_> = host.iter().filter(|m| m.fs_type == "cgroup").collect();
    if v1.is_empty() {
        let target = ensure_target(root, destination, false)?;
        let flags = flags
            | if readonly {
                MsFlags::MS_RDONLY
            } else {
                MsFlags::empty()
            };
        return mount(
            Some("cgroup2"),
            proc_fd_path(&target).as_str(),
            Some("cgroup2"),
            flags,
            None::<&str>,
        )
        .context(|| format!("mounting cgroup2 on {}", destination.display()));
    }
    let target = ensure_target(root, destination, false)?;
    mount(
        Some("tmpfs"),
        proc_fd_path(&target).as_str(),
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )
    .context(|| format!("mounting tmpfs on {}", destination.display()))?;
    let hierarchies = host.iter().filter(|m| {
        (m.fs_type == "cgroup" || m.fs_type == "cgroup2")
            && m.mount_point.starts_with("/sys/fs/cgroup/")
    });
    for hierarchy in hierarchies {
        let name = hierarchy.mount_point.trim_start_matches("/sys/fs/cgroup/");
        let subsystems = mountinfo::cgroup_subsystems(&hierarchy.super_options);
        let dir = ensure_target(root, &at(name), false)?;
        let dir_path = proc_fd_path(&dir);
        let fs_type = hierarchy.fs_type.as_str();
        let ro = if readonly {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        if config.cgroup_ns {
            let data = (fs_type == "cgroup").then_some(subsystems.as_str());
            mount(
                Some("cgroup"),
                dir_path.as_str(),
                Some(fs_type),
                flags | ro,
                data,
            )
            .context(|| format!("mounting cgroup {name}"))?;
        } else {
            let sub = own_cgroup(&own, fs_type, &subsystems).unwrap_or("/");
            let source = PathBuf::from(&hierarchy.mount_point).join(sub.trim_start_matches('/'));
            mount(
                Some(&source),
                dir_path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .context(|| format!("bind-mounting {}", source.display()))?;
            remount_bind(root, &at(name), flags | ro, config.in_user_ns)?;
        }
        // Co-mounted controllers are also reachable by each name (cpu -> cpu,cpuacct).
        if name.contains(',') {
            let parent = ensure_target(root, destination, false)?;
            for single in name.split(',') {
                match nix::unistd::symlinkat(name, parent.as_fd(), single) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e).context(|| format!("symlink {single}")),
                }
            }
        }
    }
    if readonly {
        remount_bind(
            root,
            destination,
            MsFlags::MS_RDONLY | flags,
            config.in_user_ns,
        )?;
    }
    Ok(())
}

/// This process's cgroup in the hierarchy with `subsystems` (v1) or the unified one.
fn own_cgroup<'a>(proc_cgroup: &'a str, fs_type: &str, subsystems: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if fs_type == "cgroup2" {
            controllers.is_empty()
        } else {
            controllers == subsystems
        };
        matches.then_some(path)
    })
}

/// Hides `path`: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask(root: BorrowedFd, path: &Path) -> Result<()> {
    let target = match open_in_root(root, path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            return Err(e).context(|| format!("linux.maskedPaths: opening {}", path.display()));
        }
    };
    let is_dir =
        nix::sys::stat::fstat(&target).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR);
    let result = if is_dir {
        mount(
            Some("tmpfs"),
            proc_fd_path(&target).as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            proc_fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.context(|| format!("linux.maskedPaths: masking {}", path.display()))
}

fn make_readonly(root: BorrowedFd, path: &Path) -> Result<()> {
    let target = match open_in_root(root, path) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            return Err(e).context(|| format!("linux.readonlyPaths: opening {}", path.display()));
        }
    };
    let fd_path = proc_fd_path(&target);
    mount(
        Some(fd_path.as_str()),
        fd_path.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context(|| format!("linux.readonlyPaths: binding {}", path.display()))?;
    remount_bind(root, path, MsFlags::MS_RDONLY | MsFlags::MS_REC, true)
        .map_err(|e| crate::oci::error::invalid("linux.readonlyPaths", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_matches_hierarchy() {
        let cg = "12:cpu,cpuacct:/berth/c1\n3:name=systemd:/x\n0::/unified-path\n";
        assert_eq!(own_cgroup(cg, "cgroup", "cpu,cpuacct"), Some("/berth/c1"));
        assert_eq!(own_cgroup(cg, "cgroup", "name=systemd"), Some("/x"));
        assert_eq!(own_cgroup(cg, "cgroup2", ""), Some("/unified-path"));
        assert_eq!(own_cgroup(cg, "cgroup", "memory"), None);
    }
}
