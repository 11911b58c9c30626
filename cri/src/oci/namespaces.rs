//! Which namespaces a container creates and which it joins, and doing so.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::error::{Context, Result, invalid};

const NSFS_MAGIC: i64 = 0x6e73_6673;

pub fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => super::timens::CLONE_NEWTIME,
    }
}

/// Order for joining: the user namespace first (it grants the rights to join the
/// others it owns), the mount namespace last (paths are opened beforehand anyway).
const JOIN_ORDER: [CloneFlags; 8] = [
    CloneFlags::CLONE_NEWUSER,
    CloneFlags::CLONE_NEWIPC,
    CloneFlags::CLONE_NEWUTS,
    CloneFlags::CLONE_NEWNET,
    CloneFlags::CLONE_NEWPID,
    CloneFlags::CLONE_NEWCGROUP,
    super::timens::CLONE_NEWTIME,
    CloneFlags::CLONE_NEWNS,
];

#[derive(Debug)]
pub struct NamespacePlan {
    /// Namespaces to create.
    pub new: CloneFlags,
    /// Namespaces to join, already opened (so a bad path fails before any fork).
    pub join: Vec<(CloneFlags, OwnedFd)>,
}

impl NamespacePlan {
    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Result<Self> {
        let mut plan = NamespacePlan {
            new: CloneFlags::empty(),
            join: Vec::new(),
        };
        for (i, ns) in namespaces.iter().enumerate() {
            let flag = clone_flag(ns.typ());
            match ns.path() {
                None => plan.new |= flag,
                Some(path) => plan.join.push((
                    flag,
                    open_namespace(path, &format!("linux.namespaces[{i}].path"))?,
                )),
            }
        }
        plan.sort();
        Ok(plan)
    }

    /// Every namespace of process `pid` that differs from ours (for exec).
    pub fn of_process(pid: i32) -> Result<Self> {
        let mut plan = NamespacePlan {
            new: CloneFlags::empty(),
            join: Vec::new(),
        };
        for (name, flag) in [
            ("user", CloneFlags::CLONE_NEWUSER),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("time", super::timens::CLONE_NEWTIME),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            let theirs = format!("/proc/{pid}/ns/{name}");
            let ours = format!("/proc/self/ns/{name}");
            match (std::fs::read_link(&theirs), std::fs::read_link(&ours)) {
                (Ok(a), Ok(b)) if a == b => continue,
                (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => continue,
                _ => {}
            }
            plan.join
                .push((flag, open_namespace(Path::new(&theirs), &theirs)?));
        }
        Ok(plan)
    }

    fn sort(&mut self) {
        self.join.sort_by_key(|(flag, _)| {
            JOIN_ORDER
                .iter()
                .position(|f| f == flag)
                .unwrap_or(JOIN_ORDER.len())
        });
    }

    pub fn creates(&self, flag: CloneFlags) -> bool {
        self.new.contains(flag)
    }

    pub fn joins(&self, flag: CloneFlags) -> bool {
        self.join.iter().any(|(f, _)| *f == flag)
    }

    /// Whether everything can be created by the clone(2) itself (nothing to join).
    /// The cgroup namespace is never made at clone time: it must be unshared after
    /// the parent has moved the process into the container's cgroup; nor is the
    /// time namespace, whose offsets must be written before anyone enters it.
    pub fn single_clone(&self) -> bool {
        self.join.is_empty()
    }

    pub fn join_all(&self) -> Result<()> {
        for (flag, fd) in &self.join {
            setns(fd.as_fd(), *flag).context(|| format!("joining namespace {flag:?}"))?;
        }
        Ok(())
    }
}

fn open_namespace(path: &Path, field: &str) -> Result<OwnedFd> {
    let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| invalid(field, format!("{}: {e}", path.display())))?;
    let fs = nix::sys::statfs::fstatfs(&fd)
        .map_err(|e| invalid(field, format!("{}: {e}", path.display())))?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC && fs.filesystem_type().0 as i64 != 0x9fa0 {
        return Err(invalid(
            field,
            format!("{} is not a namespace file", path.display()),
        ));
    }
    Ok(fd)
}

/// uid_map / gid_map content for a user namespace.
pub fn id_map(mappings: &[oci_spec::runtime::LinuxIdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes the id maps of a child that created a user namespace. Unprivileged
/// callers must deny setgroups before they may write gid_map.
pub fn write_id_maps(pid: i32, linux: &oci_spec::runtime::Linux) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")
            .context(|| "writing setgroups".into())?;
    }
    let uid = id_map(linux.uid_mappings().as_deref().unwrap_or_default());
    std::fs::write(format!("/proc/{pid}/uid_map"), uid)
        .map_err(|e| invalid("linux.uidMappings", format!("writing uid_map: {e}")))?;
    let gid = id_map(linux.gid_mappings().as_deref().unwrap_or_default());
    std::fs::write(format!("/proc/{pid}/gid_map"), gid)
        .map_err(|e| invalid("linux.gidMappings", format!("writing gid_map: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(json: &str) -> Vec<LinuxNamespace> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn new_namespaces_become_clone_flags() {
        let plan = NamespacePlan::from_spec(&ns(
            r#"[{"type":"pid"},{"type":"mount"},{"type":"network"}]"#,
        ))
        .unwrap();
        assert_eq!(
            plan.new,
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET
        );
        assert!(plan.single_clone());
    }

    #[test]
    fn joined_namespaces_are_opened_and_ordered_user_first() {
        let plan = NamespacePlan::from_spec(&ns(
            r#"[{"type":"mount","path":"/proc/self/ns/mnt"},{"type":"user","path":"/proc/self/ns/user"},{"type":"pid"}]"#,
        ))
        .unwrap();
        let order: Vec<_> = plan.join.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            order,
            vec![CloneFlags::CLONE_NEWUSER, CloneFlags::CLONE_NEWNS]
        );
        assert!(!plan.single_clone());
    }

    #[test]
    fn a_path_that_is_not_a_namespace_names_the_field() {
        let err = NamespacePlan::from_spec(&ns(
            r#"[{"type":"pid"},{"type":"network","path":"/etc/hostname"}]"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("linux.namespaces[1].path"), "{err}");
    }

    #[test]
    fn id_maps_are_lines_of_three_numbers() {
        let maps: Vec<oci_spec::runtime::LinuxIdMapping> =
            serde_json::from_str(r#"[{"containerID":0,"hostID":1000,"size":1},{"containerID":1,"hostID":100000,"size":65536}]"#)
                .unwrap();
        assert_eq!(id_map(&maps), "0 1000 1\n1 100000 65536\n");
    }
}
