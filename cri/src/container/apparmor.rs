//! The AppArmor profile of a container (OCI `process.apparmorProfile`),
//! decided as containerd's CRI plugin decides it:
//!
//! | host AppArmor | requested                     | result                                  |
//! |---------------|-------------------------------|-----------------------------------------|
//! | off/disabled  | nothing or Unconfined         | no profile                              |
//! | off/disabled  | RuntimeDefault or Localhost   | error: AppArmor is not supported        |
//! | on            | nothing or RuntimeDefault     | [`DEFAULT_PROFILE`] (loaded on demand)  |
//! | on            | RuntimeDefault + privileged   | no profile                              |
//! | on            | Unconfined                    | no profile                              |
//! | on            | Localhost `name`              | `name`, which must be loaded            |
//!
//! The deprecated `apparmor_profile` string counts only when `apparmor` is
//! unset: `runtime/default` and `docker/default` mean RuntimeDefault,
//! `unconfined` Unconfined, `localhost/<name>` Localhost; anything else is
//! an error. The runtime applies the profile by writing it to
//! `/proc/self/attr/apparmor/exec` just before execve.

use std::io::Write;
use std::path::{Path, PathBuf};

use berth_proto::runtime::v1 as cri;
use cri::security_profile::ProfileType;

/// Our runtime default profile (containerd names its own
/// `cri-containerd.apparmor.d`). Kept under its own name so that both
/// runtimes can share a node without replacing each other's profile.
pub const DEFAULT_PROFILE: &str = "berth-cri-default";

const FIELD: &str = "linux.security_context.apparmor";
const DEPRECATED_FIELD: &str = "linux.security_context.apparmor_profile";
const LOCALHOST_PREFIX: &str = "localhost/";

/// What the container asked for, after the deprecated field is folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Run without a profile.
    Unconfined,
    RuntimeDefault,
    /// A profile the node admin loaded, by name.
    Localhost(String),
}

/// An AppArmor problem, naming the ContainerConfig field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct AppArmorError {
    pub field: &'static str,
    pub reason: String,
}

fn error(field: &'static str, reason: impl Into<String>) -> AppArmorError {
    AppArmorError {
        field,
        reason: reason.into(),
    }
}

/// The host's AppArmor, behind a seam so the decisions are testable.
pub trait Host {
    /// AppArmor is on and the runtime may use it.
    fn enabled(&self) -> bool;
    /// Whether a profile of this name is loaded in the kernel.
    fn is_loaded(&self, name: &str) -> std::io::Result<bool>;
    /// Loads [`default_profile`] under `name`.
    fn load(&self, name: &str, profile: &str) -> Result<(), String>;
}

/// The request as a profile choice, `None` when nothing was asked for.
fn requested(
    security: &cri::LinuxContainerSecurityContext,
) -> Result<Option<(Choice, &'static str)>, AppArmorError> {
    if let Some(profile) = &security.apparmor {
        let choice = match ProfileType::try_from(profile.profile_type) {
            Ok(kind) if kind != ProfileType::Localhost && !profile.localhost_ref.is_empty() => {
                return Err(error(
                    FIELD,
                    "localhost_ref may only be set with profile_type Localhost",
                ));
            }
            Ok(ProfileType::Unconfined) => Choice::Unconfined,
            Ok(ProfileType::RuntimeDefault) => Choice::RuntimeDefault,
            Ok(ProfileType::Localhost) => {
                let name = profile
                    .localhost_ref
                    .strip_prefix(LOCALHOST_PREFIX)
                    .unwrap_or(&profile.localhost_ref);
                if name.is_empty() {
                    return Err(error(FIELD, "profile_type Localhost needs a localhost_ref"));
                }
                Choice::Localhost(name.to_string())
            }
            Err(_) => {
                return Err(error(
                    FIELD,
                    format!("unknown profile_type {}", profile.profile_type),
                ));
            }
        };
        return Ok(Some((choice, FIELD)));
    }
    #[allow(deprecated)]
    let legacy = security.apparmor_profile.as_str();
    let choice = match legacy {
        "" => return Ok(None),
        "runtime/default" | "docker/default" => Choice::RuntimeDefault,
        "unconfined" => Choice::Unconfined,
        other => match other.strip_prefix(LOCALHOST_PREFIX) {
            Some(name) if !name.is_empty() => Choice::Localhost(name.to_string()),
            _ => {
                return Err(error(
                    DEPRECATED_FIELD,
                    format!(
                        "invalid profile {other:?}: expected runtime/default, unconfined or \
                         localhost/<name>"
                    ),
                ));
            }
        },
    };
    Ok(Some((choice, DEPRECATED_FIELD)))
}

/// The decision table above, without touching the host: the profile to
/// use, if any (None: no profile).
pub fn decide(
    security: &cri::LinuxContainerSecurityContext,
    host_enabled: bool,
) -> Result<Option<Choice>, AppArmorError> {
    let requested = requested(security)?;
    if !host_enabled {
        return match requested {
            None | Some((Choice::Unconfined, _)) => Ok(None),
            Some((_, field)) => Err(error(
                field,
                "AppArmor is not supported on this host (disabled, or disabled in the config)",
            )),
        };
    }
    Ok(
        match requested.map(|(c, _)| c).unwrap_or(Choice::RuntimeDefault) {
            Choice::Unconfined => None,
            Choice::RuntimeDefault if security.privileged => None,
            choice => Some(choice),
        },
    )
}

/// The `process.apparmorProfile` of the container: the decision, with the
/// default profile loaded if it is not yet and a Localhost profile checked
/// to be loaded.
pub fn profile(
    security: &cri::LinuxContainerSecurityContext,
    host: &dyn Host,
) -> Result<Option<String>, AppArmorError> {
    let Some(choice) = decide(security, host.enabled())? else {
        return Ok(None);
    };
    match choice {
        Choice::Unconfined => Ok(None),
        Choice::RuntimeDefault => {
            let loaded = host
                .is_loaded(DEFAULT_PROFILE)
                .map_err(|e| error(FIELD, format!("reading the loaded profiles: {e}")))?;
            if !loaded {
                host.load(DEFAULT_PROFILE, &default_profile(DEFAULT_PROFILE))
                    .map_err(|e| error(FIELD, format!("loading profile {DEFAULT_PROFILE}: {e}")))?;
            }
            Ok(Some(DEFAULT_PROFILE.to_string()))
        }
        Choice::Localhost(name) => {
            let loaded = host
                .is_loaded(&name)
                .map_err(|e| error(FIELD, format!("reading the loaded profiles: {e}")))?;
            if !loaded {
                return Err(error(
                    FIELD,
                    format!("AppArmor profile {name:?} is not loaded"),
                ));
            }
            Ok(Some(name))
        }
    }
}

/// The runtime default profile: what a container may do anyway (files,
/// network, its capabilities, signals among its own processes) minus the
/// host-wide knobs and kernel interfaces a container has no business with.
pub fn default_profile(name: &str) -> String {
    format!(
        r#"#include <tunables/global>

profile {name} flags=(attach_disconnected,mediate_deleted) {{
  #include <abstractions/base>

  network,
  capability,
  file,
  umount,

  # Its own processes may signal and trace each other; unconfined ones
  # (the runtime) may signal it.
  signal (receive) peer=unconfined,
  signal (send,receive) peer={name},
  ptrace (trace,read,tracedby,readby) peer={name},

  # No new mounts: the runtime made every mount the container needs.
  deny mount,

  # Kernel interfaces that reach beyond the container.
  deny @{{PROC}}/sysrq-trigger rwklx,
  deny @{{PROC}}/kcore rwklx,
  deny @{{PROC}}/kmem rwklx,
  deny @{{PROC}}/mem rwklx,
  deny @{{PROC}}/* w,
  deny @{{PROC}}/sys/[^k]** w,
  deny @{{PROC}}/sys/kernel/{{?,??,[^s][^h][^m]**}} w,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
}}
"#
    )
}

/// The real host: AppArmor as the kernel reports it, unless the config
/// turns it off (containerd's `disable_apparmor`).
#[derive(Debug, Clone, Copy)]
pub struct KernelAppArmor {
    pub disabled_by_config: bool,
}

const ENABLED_FILE: &str = "/sys/module/apparmor/parameters/enabled";
const SECURITYFS_DIR: &str = "/sys/kernel/security/apparmor";

impl Host for KernelAppArmor {
    fn enabled(&self) -> bool {
        // As containerd: the securityfs dir exists, the module says Y, and
        // we are not ourselves in a container that announces itself.
        !self.disabled_by_config
            && Path::new(SECURITYFS_DIR).exists()
            && std::env::var_os("container").is_none()
            && std::fs::read_to_string(ENABLED_FILE).is_ok_and(|v| v.starts_with('Y'))
    }

    fn is_loaded(&self, name: &str) -> std::io::Result<bool> {
        let profiles = std::fs::read_to_string(Path::new(SECURITYFS_DIR).join("profiles"))?;
        Ok(is_listed(&profiles, name))
    }

    fn load(&self, name: &str, profile: &str) -> Result<(), String> {
        // -K: no cache; -r: replace (or add).
        run_parser("-Kr", profile).map_err(|e| format!("profile {name}: {e}"))
    }
}

/// Feeds `profile` to apparmor_parser with `flags`.
fn run_parser(flags: &str, profile: &str) -> Result<(), String> {
    let parser = apparmor_parser().ok_or("apparmor_parser is not installed")?;
    let mut child = std::process::Command::new(&parser)
        .arg(flags)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", parser.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(profile.as_bytes())
            .map_err(|e| format!("writing to apparmor_parser: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for apparmor_parser: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "apparmor_parser {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `profiles` lists one profile a line as `<name> (<mode>)`.
fn is_listed(profiles: &str, name: &str) -> bool {
    profiles.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(" ("))
    })
}

fn apparmor_parser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join("apparmor_parser"))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn with_profile(kind: ProfileType, localhost_ref: &str) -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext {
            apparmor: Some(cri::SecurityProfile {
                profile_type: kind as i32,
                localhost_ref: localhost_ref.into(),
            }),
            ..Default::default()
        }
    }

    #[allow(deprecated)]
    fn with_legacy(value: &str) -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext {
            apparmor_profile: value.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_host_without_apparmor_refuses_every_profile_but_unconfined() {
        let none = cri::LinuxContainerSecurityContext::default();
        assert_eq!(decide(&none, false), Ok(None));
        assert_eq!(
            decide(&with_profile(ProfileType::Unconfined, ""), false),
            Ok(None)
        );
        assert_eq!(decide(&with_legacy("unconfined"), false), Ok(None));
        let err = decide(&with_profile(ProfileType::RuntimeDefault, ""), false).unwrap_err();
        assert_eq!(err.field, FIELD);
        assert!(err.reason.contains("not supported"), "{err}");
        let err = decide(&with_profile(ProfileType::Localhost, "p"), false).unwrap_err();
        assert_eq!(err.field, FIELD);
        let err = decide(&with_legacy("runtime/default"), false).unwrap_err();
        assert_eq!(err.field, DEPRECATED_FIELD);
    }

    #[test]
    fn an_apparmor_host_defaults_to_the_runtime_profile() {
        let none = cri::LinuxContainerSecurityContext::default();
        assert_eq!(decide(&none, true), Ok(Some(Choice::RuntimeDefault)));
        assert_eq!(
            decide(&with_profile(ProfileType::RuntimeDefault, ""), true),
            Ok(Some(Choice::RuntimeDefault))
        );
        assert_eq!(
            decide(&with_legacy("docker/default"), true),
            Ok(Some(Choice::RuntimeDefault))
        );
        assert_eq!(
            decide(&with_profile(ProfileType::Unconfined, ""), true),
            Ok(None)
        );
    }

    #[test]
    fn privileged_containers_skip_only_the_default_profile() {
        let mut security = with_profile(ProfileType::RuntimeDefault, "");
        security.privileged = true;
        assert_eq!(decide(&security, true), Ok(None));
        let mut security = with_profile(ProfileType::Localhost, "mine");
        security.privileged = true;
        assert_eq!(
            decide(&security, true),
            Ok(Some(Choice::Localhost("mine".into())))
        );
    }

    #[test]
    fn localhost_names_lose_their_prefix_and_bad_requests_name_the_field() {
        assert_eq!(
            decide(
                &with_profile(ProfileType::Localhost, "localhost/k8s-nginx"),
                true
            ),
            Ok(Some(Choice::Localhost("k8s-nginx".into())))
        );
        assert_eq!(
            decide(&with_legacy("localhost/k8s-nginx"), true),
            Ok(Some(Choice::Localhost("k8s-nginx".into())))
        );
        let err = decide(&with_profile(ProfileType::RuntimeDefault, "x"), true).unwrap_err();
        assert!(err.reason.contains("localhost_ref"), "{err}");
        let err = decide(&with_profile(ProfileType::Localhost, ""), true).unwrap_err();
        assert_eq!(err.field, FIELD);
        let err = decide(&with_legacy("nginx"), true).unwrap_err();
        assert_eq!(err.field, DEPRECATED_FIELD);
        assert!(err.reason.contains("\"nginx\""), "{err}");
        // The new field wins over the deprecated one.
        let mut security = with_profile(ProfileType::Unconfined, "");
        #[allow(deprecated)]
        {
            security.apparmor_profile = "bogus".into();
        }
        assert_eq!(decide(&security, true), Ok(None));
    }

    struct FakeHost {
        loaded: RefCell<Vec<String>>,
    }

    impl Host for FakeHost {
        fn enabled(&self) -> bool {
            true
        }
        fn is_loaded(&self, name: &str) -> std::io::Result<bool> {
            Ok(self.loaded.borrow().iter().any(|n| n == name))
        }
        fn load(&self, name: &str, profile: &str) -> Result<(), String> {
            assert!(profile.contains(&format!("profile {name} ")));
            self.loaded.borrow_mut().push(name.to_string());
            Ok(())
        }
    }

    #[test]
    fn the_default_profile_is_loaded_once_and_localhost_ones_must_exist() {
        let host = FakeHost {
            loaded: RefCell::new(vec!["admin-made".into()]),
        };
        let none = cri::LinuxContainerSecurityContext::default();
        assert_eq!(
            profile(&none, &host).unwrap().as_deref(),
            Some(DEFAULT_PROFILE)
        );
        assert_eq!(
            profile(&none, &host).unwrap().as_deref(),
            Some(DEFAULT_PROFILE)
        );
        assert_eq!(host.loaded.borrow().len(), 2);
        let mine = with_profile(ProfileType::Localhost, "admin-made");
        assert_eq!(
            profile(&mine, &host).unwrap().as_deref(),
            Some("admin-made")
        );
        let missing = with_profile(ProfileType::Localhost, "nope");
        let err = profile(&missing, &host).unwrap_err();
        assert!(err.reason.contains("\"nope\" is not loaded"), "{err}");
    }

    #[test]
    fn the_default_profile_compiles() {
        // -Q: everything but loading into the kernel (no AppArmor needed);
        // apparmor_parser comes with scripts/install-deps.
        run_parser("-QK", &default_profile(DEFAULT_PROFILE)).unwrap();
        assert!(run_parser("-QK", "profile broken {").is_err());
    }

    #[test]
    fn loaded_profiles_are_matched_by_whole_name() {
        let listing = "berth-cri-default (enforce)\nnginx-extra (complain)\n";
        assert!(is_listed(listing, "berth-cri-default"));
        assert!(is_listed(listing, "nginx-extra"));
        assert!(!is_listed(listing, "nginx"));
    }
}
