//! Applying a runtime-spec `process` to the calling process: rlimits, LSM labels,
//! user and groups, capabilities, executable lookup. Used by the container's init
//! and by exec'd processes alike.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, Gid, Uid};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType, Process};

use crate::oci::capabilities::{self, CapabilitySets};
use crate::oci::error::{Context, OciError, Result, invalid};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn rlimit_resource(typ: PosixRlimitType) -> libc::__rlimit_resource_t {
    match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for (i, limit) in rlimits.iter().enumerate() {
        let value = libc::rlimit {
            rlim_cur: limit.soft(),
            rlim_max: limit.hard(),
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(rlimit_resource(limit.typ()), &value) } != 0 {
            return Err(invalid(
                format!("process.rlimits[{i}]"),
                format!("{}: {}", limit.typ(), std::io::Error::last_os_error()),
            ));
        }
    }
    Ok(())
}

/// The LSMs this host has enabled.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostLsm {
    pub apparmor: bool,
    pub selinux: bool,
}

impl HostLsm {
    pub fn detect() -> Self {
        HostLsm {
            apparmor: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|v| v.trim() == "Y"),
            selinux: Path::new("/sys/fs/selinux/enforce").exists(),
        }
    }
}

/// Sets the AppArmor profile / SELinux label that the next execve takes on.
/// A label for an LSM the host lacks is skipped (and logged); a label the LSM
/// refuses is an error.
pub fn set_exec_labels(process: &Process, lsm: HostLsm) -> Result<()> {
    if let Some(profile) = process
        .apparmor_profile()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        if lsm.apparmor {
            let attr = if Path::new("/proc/self/attr/apparmor/exec").exists() {
                "/proc/self/attr/apparmor/exec"
            } else {
                "/proc/self/attr/exec"
            };
            std::fs::write(attr, format!("exec {profile}"))
                .map_err(|e| invalid("process.apparmorProfile", format!("{profile}: {e}")))?;
        } else {
            tracing::debug!(
                "AppArmor is not enabled; process.apparmorProfile {profile} not applied"
            );
        }
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        if lsm.selinux {
            std::fs::write("/proc/self/attr/exec", label)
                .map_err(|e| invalid("process.selinuxLabel", format!("{label}: {e}")))?;
        } else {
            tracing::debug!("SELinux is not enabled; process.selinuxLabel {label} not applied");
        }
    }
    Ok(())
}

/// Switches to the process's user (groups first, then gid, then uid), keeping
/// the capability sets that `caps` then installs.
pub fn switch_user(process: &Process, caps: Option<&CapabilitySets>) -> Result<()> {
    let user = process.user();
    if let Some(caps) = caps {
        capabilities::drop_bounding(caps)?;
    }
    capabilities::keep_across_setuid(true)?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    match nix::unistd::setgroups(&groups) {
        // setgroups is denied in user namespaces mapped without privilege.
        Err(nix::errno::Errno::EPERM) if groups.is_empty() => {}
        other => other.map_err(|e| invalid("process.user.additionalGids", e.to_string()))?,
    }
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| invalid("process.user.gid", e.to_string()))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| invalid("process.user.uid", e.to_string()))?;
    capabilities::keep_across_setuid(false)?;
    if let Some(caps) = caps {
        capabilities::apply(caps)?;
    } else if !uid.is_root() {
        // No capabilities section: a non-root user keeps none.
        capabilities::apply(&CapabilitySets::default())?;
    }
    Ok(())
}

/// The process environment: the spec's, plus HOME from the container's passwd if
/// missing (as runc does), plus any extra entries.
pub fn environment(process: &Process, extra: &[String]) -> Vec<String> {
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    env.extend(extra.iter().cloned());
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|passwd| home_of(&passwd, process.user().uid()))
            .unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    env
}

fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse::<u32>().ok() == Some(uid))
            .then(|| fields[5].to_string())
    })
}

/// Finds args[0] in PATH (from `env`), in the current root and cwd.
pub fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf> {
    let executable = |p: &Path| p.is_file() && nix::unistd::access(p, AccessFlags::X_OK).is_ok();
    if arg0.contains('/') {
        let path = PathBuf::from(arg0);
        if executable(&path) {
            return Ok(path);
        }
        return Err(OciError::Init(format!(
            "exec: {arg0:?}: no such file or directory or not executable"
        )));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(arg0))
        .find(|p| executable(p))
        .ok_or_else(|| {
            OciError::Init(format!(
                "exec: {arg0:?}: executable file not found in $PATH"
            ))
        })
}

pub fn cstrings(items: &[String], field: &str) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| invalid(field, format!("{s:?} contains a NUL byte")))
        })
        .collect()
}

/// chdir to the process cwd and check that it really is inside the container's
/// root (a leaked host directory fd would show as "(unreachable)").
pub fn enter_cwd(cwd: &Path) -> Result<()> {
    nix::unistd::chdir(cwd)
        .map_err(|e| invalid("process.cwd", format!("{}: {e}", cwd.display())))?;
    let actual = nix::unistd::getcwd().context(|| "getcwd".into())?;
    if !actual.is_absolute() || actual.starts_with("(unreachable)") {
        return Err(invalid(
            "process.cwd",
            format!("{} is outside the container", cwd.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_passwd_by_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n";
        assert_eq!(home_of(passwd, 33).as_deref(), Some("/var/www"));
        assert_eq!(home_of(passwd, 1000), None);
    }

    #[test]
    fn executables_are_found_in_the_process_path() {
        let env = vec!["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(
            find_executable("sh", &env).unwrap(),
            PathBuf::from("/bin/sh")
        );
        let err = find_executable("no-such-binary-xyz", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("executable file not found in $PATH"), "{err}");
        assert!(find_executable("/bin/sh", &[]).is_ok());
    }

    #[test]
    fn nul_bytes_in_args_name_the_field() {
        assert!(
            cstrings(&["a\0b".into()], "process.args")
                .unwrap_err()
                .to_string()
                .starts_with("process.args")
        );
    }
}
