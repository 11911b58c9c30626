//! SELinux labels of a container (OCI `process.selinuxLabel` and
//! `linux.mountLabel`) and the relabelling of its `selinux_relabel` mounts,
//! decided as containerd decides them:
//!
//! - The container's `selinux_options` apply when any of them is set,
//!   otherwise the pod's (so that every container of a pod shares the pod's
//!   MCS level). A malformed `level` is an error whether or not the host
//!   has SELinux.
//! - A host without SELinux (no selinuxfs) gets no labels at all and
//!   relabels nothing: `selinux_relabel` is accepted and ignored.
//! - On an SELinux host the labels start from the policy's container
//!   contexts (`lxc_contexts`: `process` and `file`); `user`, `role`, `type`
//!   and `level` replace their parts of the process label, `user` and
//!   `level` those of the mount label. Without a `level` the pod gets an MCS
//!   level of two categories derived from its sandbox id, so all its
//!   containers share it with no state to keep.
//! - `selinux_relabel` host paths get the mount label (recursively), except
//!   system directories, which are refused.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_proto::runtime::v1 as cri;

/// A problem with the options or the relabelling, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SelinuxError {
    pub field: String,
    pub reason: String,
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> SelinuxError {
    SelinuxError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The labels a container gets; both empty on a host without SELinux.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub process: String,
    pub mount: String,
}

/// The host's SELinux, behind a seam so the decisions are testable.
pub trait Host {
    /// The policy's default container contexts (process, file) when
    /// SELinux is enabled, `None` when it is not.
    fn container_contexts(&self) -> Option<(String, String)>;
    /// Sets `label` on `path` and everything under it.
    fn relabel(&self, path: &Path, label: &str) -> std::io::Result<()>;
}

/// `s0`, `s0-s0`, `s0:c1,c2`, `s0:c0.c1023`: a sensitivity (range) with an
/// optional category set, as containerd accepts it.
pub fn check_level(level: &str) -> bool {
    fn sensitivity(s: &str) -> bool {
        s.len() == 2 && s.starts_with('s') && s.as_bytes()[1].is_ascii_digit()
    }
    fn category(c: &str) -> bool {
        c.strip_prefix('c')
            .is_some_and(|n| (1..=4).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
    }
    let (range, categories) = match level.split_once(':') {
        Some((range, categories)) => (range, Some(categories)),
        None => (level, None),
    };
    let range_ok = match range.split_once('-') {
        Some((low, high)) => sensitivity(low) && sensitivity(high),
        None => sensitivity(range),
    };
    let categories_ok = categories.is_none_or(|set| {
        set.split(',').all(|item| match item.split_once('.') {
            Some((from, to)) => category(from) && category(to),
            None => category(item),
        })
    });
    range_ok && categories_ok
}

fn is_set(options: &cri::SeLinuxOption) -> bool {
    !(options.user.is_empty()
        && options.role.is_empty()
        && options.r#type.is_empty()
        && options.level.is_empty())
}

/// The options that apply: the container's when it sets any, else the
/// pod's; each level checked.
fn effective<'a>(
    container: Option<&'a cri::SeLinuxOption>,
    pod: Option<&'a cri::SeLinuxOption>,
) -> Result<Option<&'a cri::SeLinuxOption>, SelinuxError> {
    for (options, field) in [
        (container, "linux.security_context.selinux_options.level"),
        (
            pod,
            "sandbox_config.linux.security_context.selinux_options.level",
        ),
    ] {
        if let Some(options) = options
            && !options.level.is_empty()
            && !check_level(&options.level)
        {
            return Err(error(
                field,
                format!("the format of {:?} is not correct", options.level),
            ));
        }
    }
    Ok(container
        .filter(|o| is_set(o))
        .or(pod.filter(|o| is_set(o))))
}

/// Two distinct categories (c0..c1023) from the sandbox id: the pod's own
/// MCS level, the same for all its containers.
fn pod_level(sandbox_id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(sandbox_id.as_bytes());
    let first = u16::from_be_bytes([digest[0], digest[1]]) % 1024;
    let mut second = u16::from_be_bytes([digest[2], digest[3]]) % 1023;
    if second >= first {
        second += 1;
    }
    let (low, high) = (first.min(second), first.max(second));
    format!("s0:c{low},c{high}")
}

/// `user:role:type:level` (the level may hold colons) with parts replaced.
fn with_parts(context: &str, user: &str, role: &str, kind: &str, level: &str) -> String {
    let mut parts: Vec<&str> = context.splitn(4, ':').collect();
    parts.resize(4, "");
    for (index, value) in [(0, user), (1, role), (2, kind), (3, level)] {
        if !value.is_empty() {
            parts[index] = value;
        }
    }
    parts.join(":")
}

/// The labels of a container of sandbox `sandbox_id`.
pub fn labels(
    container: Option<&cri::SeLinuxOption>,
    pod: Option<&cri::SeLinuxOption>,
    sandbox_id: &str,
    host: &dyn Host,
) -> Result<Labels, SelinuxError> {
    let options = effective(container, pod)?;
    let Some((process, file)) = host.container_contexts() else {
        return Ok(Labels::default());
    };
    let options = options.cloned().unwrap_or_default();
    let level = if options.level.is_empty() {
        pod_level(sandbox_id)
    } else {
        options.level.clone()
    };
    Ok(Labels {
        process: with_parts(
            &process,
            &options.user,
            &options.role,
            &options.r#type,
            &level,
        ),
        mount: with_parts(&file, &options.user, "", "", &level),
    })
}

/// Host directories that must keep their own labels.
const PROTECTED: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/etc/passwd",
    "/etc/pki",
    "/etc/shadow",
    "/home",
    "/lib",
    "/lib64",
    "/media",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/lib",
    "/var/log",
];

/// Gives every `selinux_relabel` mount's host path the mount label (a
/// no-op without labels, i.e. without SELinux).
pub fn relabel_mounts(
    mounts: &[cri::Mount],
    labels: &Labels,
    host: &dyn Host,
) -> Result<(), SelinuxError> {
    if labels.mount.is_empty() {
        return Ok(());
    }
    for (index, mount) in mounts.iter().enumerate() {
        if !mount.selinux_relabel || mount.host_path.is_empty() {
            continue;
        }
        let field = format!("mounts[{index}].selinux_relabel");
        let path = Path::new(&mount.host_path);
        let clean: PathBuf = path.components().collect();
        if PROTECTED.iter().any(|p| Path::new(p) == clean) {
            return Err(error(
                field,
                format!("relabelling {} is not allowed", path.display()),
            ));
        }
        host.relabel(path, &labels.mount)
            .map_err(|e| error(field, format!("relabelling {}: {e}", path.display())))?;
    }
    Ok(())
}

/// The real host: SELinux on when selinuxfs is mounted (and not turned
/// off in the config, containerd's `enable_selinux = false`).
#[derive(Debug, Clone, Copy)]
pub struct KernelSelinux {
    pub enabled_by_config: bool,
}

impl KernelSelinux {
    fn policy_dir() -> Option<PathBuf> {
        let config = std::fs::read_to_string("/etc/selinux/config").ok()?;
        let policy = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("SELINUXTYPE="))?
            .trim();
        Some(Path::new("/etc/selinux").join(policy))
    }
}

/// `key = "value"` from an lxc_contexts file.
fn context_entry(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

impl Host for KernelSelinux {
    fn container_contexts(&self) -> Option<(String, String)> {
        if !self.enabled_by_config || !Path::new("/sys/fs/selinux/enforce").exists() {
            return None;
        }
        let text = std::fs::read_to_string(Self::policy_dir()?.join("contexts/lxc_contexts"))
            .unwrap_or_default();
        Some((
            context_entry(&text, "process")
                .unwrap_or_else(|| "system_u:system_r:container_t:s0".into()),
            context_entry(&text, "file")
                .unwrap_or_else(|| "system_u:object_r:container_file_t:s0".into()),
        ))
    }

    fn relabel(&self, path: &Path, label: &str) -> std::io::Result<()> {
        set_label(path, label)?;
        if std::fs::symlink_metadata(path)?.is_dir() {
            for entry in std::fs::read_dir(path)? {
                self.relabel(&entry?.path(), label)?;
            }
        }
        Ok(())
    }
}

fn set_label(path: &Path, label: &str) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("NUL byte in path"))?;
    let name = c"security.selinux";
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            name.as_ptr(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn options(user: &str, role: &str, kind: &str, level: &str) -> cri::SeLinuxOption {
        cri::SeLinuxOption {
            user: user.into(),
            role: role.into(),
            r#type: kind.into(),
            level: level.into(),
        }
    }

    struct Disabled;
    impl Host for Disabled {
        fn container_contexts(&self) -> Option<(String, String)> {
            None
        }
        fn relabel(&self, _: &Path, _: &str) -> std::io::Result<()> {
            panic!("nothing is relabelled without SELinux")
        }
    }

    #[derive(Default)]
    struct Enabled {
        relabelled: RefCell<Vec<(PathBuf, String)>>,
    }
    impl Host for Enabled {
        fn container_contexts(&self) -> Option<(String, String)> {
            Some((
                "system_u:system_r:container_t:s0".into(),
                "system_u:object_r:container_file_t:s0".into(),
            ))
        }
        fn relabel(&self, path: &Path, label: &str) -> std::io::Result<()> {
            self.relabelled
                .borrow_mut()
                .push((path.to_path_buf(), label.to_string()));
            Ok(())
        }
    }

    #[test]
    fn levels_are_checked_as_containerd_checks_them() {
        for good in [
            "s0",
            "s0-s0",
            "s0:c1",
            "s0:c1,c2",
            "s0:c0.c1023",
            "s0-s1:c5,c7.c9",
        ] {
            assert!(check_level(good), "{good}");
        }
        for bad in [
            "",
            "s",
            "s10",
            "x0",
            "s0:",
            "s0:c",
            "s0:c12345",
            "s0:c1,",
            "s0:d1",
        ] {
            assert!(!check_level(bad), "{bad}");
        }
    }

    #[test]
    fn without_selinux_there_are_no_labels_and_relabel_is_ignored() {
        let container = options("", "", "spc_t", "s0:c1,c2");
        let labels = labels(Some(&container), None, "sb", &Disabled).unwrap();
        assert_eq!(labels, Labels::default());
        let mounts = [cri::Mount {
            host_path: "/data".into(),
            container_path: "/data".into(),
            selinux_relabel: true,
            ..Default::default()
        }];
        relabel_mounts(&mounts, &labels, &Disabled).unwrap();
    }

    #[test]
    fn a_bad_level_is_an_error_even_without_selinux() {
        let bad = options("", "", "", "high");
        let err = labels(Some(&bad), None, "sb", &Disabled).unwrap_err();
        assert_eq!(err.field, "linux.security_context.selinux_options.level");
        let err = labels(None, Some(&bad), "sb", &Disabled).unwrap_err();
        assert_eq!(
            err.field,
            "sandbox_config.linux.security_context.selinux_options.level"
        );
    }

    #[test]
    fn options_replace_their_parts_of_the_policy_contexts() {
        let container = options("user_u", "user_r", "spc_t", "s0:c3,c4");
        let labels = labels(Some(&container), None, "sb", &Enabled::default()).unwrap();
        assert_eq!(labels.process, "user_u:user_r:spc_t:s0:c3,c4");
        assert_eq!(labels.mount, "user_u:object_r:container_file_t:s0:c3,c4");
    }

    #[test]
    fn containers_inherit_the_pods_options_and_share_its_level() {
        let host = Enabled::default();
        let pod = options("", "", "pod_t", "");
        let a = labels(None, Some(&pod), "sandbox-1", &host).unwrap();
        let b = labels(
            Some(&cri::SeLinuxOption::default()),
            Some(&pod),
            "sandbox-1",
            &host,
        )
        .unwrap();
        assert_eq!(a, b);
        assert!(
            a.process.starts_with("system_u:system_r:pod_t:s0:c"),
            "{a:?}"
        );
        let other = labels(None, Some(&pod), "sandbox-2", &host).unwrap();
        assert_ne!(a.process, other.process, "pods get their own level");
        let level = a.process.splitn(4, ':').nth(3).unwrap();
        assert!(check_level(level), "{level}");
        let (low, high) = level[3..].split_once(',').unwrap();
        assert_ne!(low, high);
    }

    #[test]
    fn relabel_gives_host_paths_the_mount_label_but_spares_system_dirs() {
        let host = Enabled::default();
        let labels = Labels {
            process: "p".into(),
            mount: "system_u:object_r:container_file_t:s0:c1,c2".into(),
        };
        let mount = |path: &str, relabel: bool| cri::Mount {
            host_path: path.into(),
            container_path: "/x".into(),
            selinux_relabel: relabel,
            ..Default::default()
        };
        relabel_mounts(
            &[mount("/srv/data", true), mount("/srv/other", false)],
            &labels,
            &host,
        )
        .unwrap();
        assert_eq!(
            *host.relabelled.borrow(),
            [(PathBuf::from("/srv/data"), labels.mount.clone())]
        );
        let err = relabel_mounts(&[mount("/usr/", true)], &labels, &host).unwrap_err();
        assert_eq!(err.field, "mounts[0].selinux_relabel");
    }

    #[test]
    fn lxc_contexts_entries_are_read() {
        let text = "process = \"system_u:system_r:container_t:s0\"\nfile = \"system_u:object_r:container_file_t:s0\"\n";
        assert_eq!(
            context_entry(text, "file").as_deref(),
            Some("system_u:object_r:container_file_t:s0")
        );
        assert_eq!(context_entry(text, "ro_file"), None);
    }
}
