//! Pod sysctls: only those namespaced by the pod's network or IPC namespace
//! are accepted (as the kubelet and runc allow), and they are written from a
//! thread that has joined the pause process's namespaces.

use std::collections::HashMap;
use std::fs::File;

use nix::sched::{CloneFlags, setns};

/// Which of the pod's namespaces a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Network,
    Ipc,
}

fn scope(key: &str) -> Option<Scope> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if key.starts_with("net.") {
        Some(Scope::Network)
    } else if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(Scope::Ipc)
    } else {
        None
    }
}

/// Checks every sysctl against the pod's namespace choices.
pub fn validate(
    sysctls: &HashMap<String, String>,
    host_network: bool,
    host_ipc: bool,
) -> Result<(), String> {
    for key in sysctls.keys() {
        let key_norm = key.replace('/', ".");
        match scope(&key_norm) {
            None => return Err(format!("sysctl {key:?} is not namespaced")),
            Some(Scope::Network) if host_network => {
                return Err(format!("sysctl {key:?} not allowed with host network"));
            }
            Some(Scope::Ipc) if host_ipc => {
                return Err(format!("sysctl {key:?} not allowed with host IPC"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes the sysctls inside the namespaces of process `pid`.
pub fn apply(pid: i32, sysctls: &HashMap<String, String>) -> Result<(), String> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let sysctls = sysctls.clone();
    // setns changes only the calling thread: a dedicated thread keeps the
    // daemon's own threads in the host namespaces.
    std::thread::spawn(move || -> Result<(), String> {
        for (ns, flag) in [
            ("net", CloneFlags::CLONE_NEWNET),
            ("ipc", CloneFlags::CLONE_NEWIPC),
        ] {
            let path = format!("/proc/{pid}/ns/{ns}");
            let file = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
            setns(&file, flag).map_err(|e| format!("joining {path}: {e}"))?;
        }
        for (key, value) in &sysctls {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value}: {e}"))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| "sysctl thread panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_sysctls_pass() {
        let one = |k: &str| HashMap::from([(k.to_string(), "1".to_string())]);
        assert!(validate(&one("net.ipv4.ip_forward"), false, false).is_ok());
        assert!(validate(&one("kernel.shmmax"), false, false).is_ok());
        assert!(validate(&one("net.ipv4.ip_forward"), true, false).is_err());
        assert!(validate(&one("kernel.shmmax"), false, true).is_err());
        let err = validate(&one("vm.swappiness"), false, false).unwrap_err();
        assert!(err.contains("vm.swappiness"), "{err}");
    }
}
