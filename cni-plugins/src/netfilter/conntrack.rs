//! Conntrack flushing through the `conntrack` tool (conntrack-tools).

use std::process::{Command, Stdio};

use crate::types::{CniError, CniResult};

/// Deletes the UDP conntrack entries of one family whose original destination
/// port is `port`. A UDP "connection" to a host port that had no mapping yet
/// (or mapped to a previous pod) stays in conntrack as long as the client keeps
/// sending, and its packets would bypass a new DNAT rule.
pub fn delete_udp_to_port(v6: bool, port: u16) -> CniResult<()> {
    let port = port.to_string();
    let family = if v6 { "ipv6" } else { "ipv4" };
    let args = ["-D", "-f", family, "-p", "udp", "--dport", &port];
    let out = Command::new("conntrack")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CniError::io("cannot run conntrack", e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // conntrack exits 1 when nothing matched; that is success here.
    if out.status.success() || stderr.contains(" 0 flow entries have been deleted") {
        Ok(())
    } else {
        Err(CniError::internal(
            format!("conntrack {} failed", args.join(" ")),
            stderr.trim(),
        ))
    }
}
