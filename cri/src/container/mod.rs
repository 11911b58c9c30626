//! Containers: the OCI runtime spec a CRI ContainerConfig becomes.

pub mod apparmor;
pub mod cdi;
pub mod image_volume;
pub mod selinux;
pub mod spec;
pub mod user;

use std::path::PathBuf;

/// What the node offers a container beyond its ContainerConfig, from the
/// daemon config: its LSMs (behind seams, for tests) and its CDI spec dirs.
pub struct HostOptions {
    pub apparmor: Box<dyn apparmor::Host + Send + Sync>,
    pub selinux: Box<dyn selinux::Host + Send + Sync>,
    /// Where CDI spec files are looked up, lowest priority first; empty
    /// when CDI is off.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

impl HostOptions {
    /// The real host as the config lets containers use it.
    pub fn from_config(config: &crate::config::Config) -> HostOptions {
        HostOptions {
            apparmor: Box::new(apparmor::KernelAppArmor {
                disabled_by_config: config.disable_apparmor,
            }),
            selinux: Box::new(selinux::KernelSelinux {
                enabled_by_config: config.enable_selinux,
            }),
            cdi_spec_dirs: if config.enable_cdi {
                config.cdi_spec_dirs.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// A host with neither AppArmor nor SELinux nor CDI.
    #[cfg(test)]
    pub(crate) fn none() -> HostOptions {
        HostOptions {
            apparmor: Box::new(apparmor::KernelAppArmor {
                disabled_by_config: true,
            }),
            selinux: Box::new(selinux::KernelSelinux {
                enabled_by_config: false,
            }),
            cdi_spec_dirs: Vec::new(),
        }
    }
}
