//! Which namespaces a sandbox gets, and where containers find them.

use std::path::PathBuf;

/// A sandbox's namespace choices (from the CRI `NamespaceOption`).
#[derive(Debug, Clone, Default)]
pub struct SandboxNamespaces {
    /// Use the host's network (and, like containerd, its UTS namespace).
    pub host_network: bool,
    /// Use the host's PID namespace: the pause process is then no init.
    pub host_pid: bool,
    pub host_ipc: bool,
    /// The pod netns to join (see `sandbox::netns`); required unless
    /// `host_network`.
    pub netns: Option<PathBuf>,
    /// Set in the new UTS namespace; ignored with `host_network`.
    pub hostname: Option<String>,
}

/// The namespaces containers of the pod join: `/proc/<pause pid>/ns/*`
/// for those the pod owns, `None` for those shared with the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePaths {
    pub network: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

impl NamespacePaths {
    pub(super) fn of(pid: i32, ns: &SandboxNamespaces) -> Self {
        let path =
            |own: bool, name: &str| own.then(|| PathBuf::from(format!("/proc/{pid}/ns/{name}")));
        NamespacePaths {
            network: path(!ns.host_network, "net"),
            pid: path(!ns.host_pid, "pid"),
            ipc: path(!ns.host_ipc, "ipc"),
            uts: path(!ns.host_network, "uts"),
        }
    }
}
