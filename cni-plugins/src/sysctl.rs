//! sysctl access through /proc/sys. Network sysctls belong to the network
//! namespace of the calling thread when the file is opened.

use crate::types::{CniError, CniResult};

fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

pub fn get(key: &str) -> CniResult<String> {
    std::fs::read_to_string(path(key))
        .map(|s| s.trim().to_string())
        .map_err(|e| CniError::io(format!("cannot read sysctl {key}"), e))
}

/// Writes `value` unless it is already set (a write costs a permission check
/// and may be refused where a read is not).
pub fn set(key: &str, value: &str) -> CniResult<()> {
    if get(key).is_ok_and(|v| v == value) {
        return Ok(());
    }
    std::fs::write(path(key), value)
        .map_err(|e| CniError::io(format!("cannot set sysctl {key}={value}"), e))
}

/// The sysctl key for a per-interface setting; dots in interface names
/// become slashes in the key form, so they are escaped as the kernel expects.
pub fn iface_key(family: &str, ifname: &str, leaf: &str) -> String {
    format!("net.{family}.conf.{}.{leaf}", ifname.replace('.', "/"))
}
