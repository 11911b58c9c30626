//! Idmapped bind mounts (mounts[].uidMappings/gidMappings, or the `idmap` /
//! `ridmap` options with the container's own mappings).
//!
//! The runtime clones each source tree detached (open_tree), gives it the
//! mappings of a user namespace made for the purpose (MOUNT_ATTR_IDMAP), and
//! the container's init moves the tree into place. This happens on the host
//! side: setting an idmapping needs CAP_SYS_ADMIN over the source filesystem,
//! which an init inside a user namespace does not have.
//! The syscalls are hand-written: neither nix nor libc wrap the mount API.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use crate::oci::error::{Context, Result, invalid};
use crate::oci::namespaces::id_map;
use crate::oci::process::fork::{Forked, clone_with};

/// A detached, idmapped copy of `mounts[index].source`.
#[derive(Debug)]
pub struct IdmappedMount {
    pub index: usize,
    pub tree: OwnedFd,
}

/// What an idmapped mount maps with and whether it covers submounts.
struct IdmapRequest<'a> {
    uid: &'a [LinuxIdMapping],
    gid: &'a [LinuxIdMapping],
    recursive: bool,
}

fn has_option(m: &Mount, name: &str) -> bool {
    m.options().iter().flatten().any(|o| o == name)
}

/// The mappings of mounts[`index`], None when it is not idmapped. Checks the
/// request (naming the offending field).
fn request<'a>(spec: &'a Spec, index: usize, m: &'a Mount) -> Result<Option<IdmapRequest<'a>>> {
    let field = |name: &str| format!("mounts[{index}].{name}");
    let by_option = has_option(m, "idmap") || has_option(m, "ridmap");
    let (uid, gid) = match (m.uid_mappings(), m.gid_mappings()) {
        (None, None) if !by_option => return Ok(None),
        (None, None) => {
            // The options alone map with the container's user namespace.
            let linux = spec.linux().as_ref();
            match (
                linux.and_then(|l| l.uid_mappings().as_deref()),
                linux.and_then(|l| l.gid_mappings().as_deref()),
            ) {
                (Some(uid), Some(gid)) if !uid.is_empty() && !gid.is_empty() => (uid, gid),
                _ => {
                    return Err(invalid(
                        field("options"),
                        "idmap without mount mappings needs linux.uidMappings and linux.gidMappings",
                    ));
                }
            }
        }
        (Some(_), None) => {
            return Err(invalid(
                field("gidMappings"),
                "missing (uidMappings is set)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                field("uidMappings"),
                "missing (gidMappings is set)",
            ));
        }
        (Some(uid), Some(gid)) => (uid.as_slice(), gid.as_slice()),
    };
    for (name, maps) in [("uidMappings", uid), ("gidMappings", gid)] {
        if maps.is_empty() {
            return Err(invalid(field(name), "must not be empty"));
        }
        if let Some(i) = maps.iter().position(|m| m.size() == 0) {
            return Err(invalid(
                field(&format!("{name}[{i}].size")),
                "must not be 0",
            ));
        }
    }
    let is_bind =
        m.typ().as_deref() == Some("bind") || has_option(m, "bind") || has_option(m, "rbind");
    if !is_bind {
        return Err(invalid(
            field("uidMappings"),
            "only bind mounts can be idmapped",
        ));
    }
    Ok(Some(IdmapRequest {
        uid,
        gid,
        recursive: has_option(m, "rbind") || has_option(m, "ridmap"),
    }))
}

/// Checks every mount's idmapping request without making anything.
pub fn validate(spec: &Spec) -> Result<()> {
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        request(spec, index, m)?;
    }
    Ok(())
}

/// The idmapped trees of every idmapped mount of `spec` (bind sources must
/// already be absolute).
pub fn prepare(spec: &Spec) -> Result<Vec<IdmappedMount>> {
    let mut trees = Vec::new();
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(request) = request(spec, index, m)? else {
            continue;
        };
        let source = m.source().clone().unwrap_or_default();
        let context = || format!("mounts[{index}] ({})", m.destination().display());
        let userns = user_namespace(request.uid, request.gid).context(context)?;
        let tree = open_tree_clone(&source, request.recursive)
            .context(|| format!("{}: open_tree {}", context(), source.display()))?;
        set_idmap(&tree, userns.as_fd_borrowed(), request.recursive)
            .context(|| format!("{}: setting the idmapping", context()))?;
        trees.push(IdmappedMount { index, tree });
    }
    Ok(trees)
}

/// Moves a prepared tree onto `target` (an O_PATH fd in the container's root).
pub fn attach(tree: &OwnedFd, target: &OwnedFd) -> std::result::Result<(), Errno> {
    // SAFETY: two valid fds and NUL-terminated empty paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(rc).map(drop)
}

/// A user namespace fd with the given maps, held by nobody: a child that made
/// it waits while we write its maps and open it, and is then killed.
struct UserNamespace(OwnedFd);

impl UserNamespace {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }
}

/// Kills and reaps the placeholder child however we leave.
struct Placeholder(Pid);

impl Drop for Placeholder {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.0, None);
    }
}

fn user_namespace(
    uid: &[LinuxIdMapping],
    gid: &[LinuxIdMapping],
) -> std::result::Result<UserNamespace, std::io::Error> {
    let pid = match clone_with(CloneFlags::CLONE_NEWUSER).map_err(std::io::Error::other)? {
        Forked::Child => loop {
            // SAFETY: pause only waits for the SIGKILL that ends us.
            unsafe { libc::pause() };
        },
        Forked::Parent(pid) => Placeholder(pid),
    };
    std::fs::write(format!("/proc/{}/uid_map", pid.0), id_map(uid))?;
    std::fs::write(format!("/proc/{}/gid_map", pid.0), id_map(gid))?;
    let fd = std::fs::File::open(format!("/proc/{}/ns/user", pid.0))?;
    Ok(UserNamespace(fd.into()))
}

fn open_tree_clone(
    source: &std::path::Path,
    recursive: bool,
) -> std::result::Result<OwnedFd, Errno> {
    let path =
        std::ffi::CString::new(source.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: NUL-terminated path, plain flags.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    let fd = Errno::result(rc)?;
    // SAFETY: open_tree returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn set_idmap(
    tree: &OwnedFd,
    userns: BorrowedFd,
    recursive: bool,
) -> std::result::Result<(), Errno> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    super::mount_setattr(tree, &attr, recursive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"mounts":{mounts},"linux":{{}}}}"#
        ))
        .unwrap()
    }

    fn error(mounts: &str) -> String {
        validate(&spec(mounts)).unwrap_err().to_string()
    }

    #[test]
    fn bad_requests_name_the_field() {
        let map = r#"[{"containerID":0,"hostID":1000,"size":1}]"#;
        assert!(
            error(&format!(
                r#"[{{"destination":"/d","type":"bind","source":"/tmp","uidMappings":{map}}}]"#
            ))
            .starts_with("mounts[0].gidMappings")
        );
        assert!(
            error(&format!(
                r#"[{{"destination":"/d","type":"tmpfs","source":"tmpfs","uidMappings":{map},"gidMappings":{map}}}]"#
            ))
            .starts_with("mounts[0].uidMappings")
        );
        let zero = r#"[{"containerID":0,"hostID":1000,"size":0}]"#;
        assert!(
            error(&format!(
                r#"[{{"destination":"/d","type":"bind","source":"/tmp","uidMappings":{map},"gidMappings":{zero}}}]"#
            ))
            .starts_with("mounts[0].gidMappings[0].size")
        );
        assert!(
            error(r#"[{"destination":"/d","type":"bind","source":"/tmp","options":["idmap"]}]"#)
                .starts_with("mounts[0].options")
        );
    }

    #[test]
    fn mappings_or_options_make_a_request() {
        let map = r#"[{"containerID":0,"hostID":1000,"size":1}]"#;
        let s = spec(&format!(
            r#"[{{"destination":"/d","type":"bind","source":"/tmp","options":["rbind"],"uidMappings":{map},"gidMappings":{map}}},{{"destination":"/e","type":"bind","source":"/tmp"}}]"#
        ));
        let mounts = s.mounts().clone().unwrap();
        let first = request(&s, 0, &mounts[0]).unwrap().unwrap();
        assert!(first.recursive);
        assert_eq!(first.uid[0].host_id(), 1000);
        assert!(request(&s, 1, &mounts[1]).unwrap().is_none());
    }
}
