//! Netfilter programming through the `iptables`/`ip6tables` and `nft`
//! command-line tools (what the reference plugins drive as well), plus the
//! naming shared by every rule a plugin makes for one attachment.

pub mod conntrack;
pub mod masquerade;

use std::io::Write;
use std::process::{Command, Stdio};

use serde::Deserialize;
use sha2::{Digest, Sha512};

use crate::types::{CniError, CniResult};

/// Which netfilter front end a plugin programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Iptables,
    Nftables,
}

/// iptables refuses chain names longer than this.
const MAX_CHAIN_LEN: usize = 28;

/// `<prefix><hex digits of sha512(name + id)>` cut to iptables' 28-character
/// limit: a per-attachment chain name equal to the reference plugins' so
/// either can clean up after the other.
pub fn chain_name(prefix: &str, network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let keep = MAX_CHAIN_LEN.saturating_sub(prefix.len()).max(8);
    format!("{prefix}{}", &hex[..keep])
}

/// The comment tying a rule to its attachment.
pub fn comment(network: &str, container_id: &str) -> String {
    format!("name: \"{network}\" id: \"{container_id}\"")
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> CniResult<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::io(format!("cannot run {program}"), e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| CniError::io(format!("cannot write to {program}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(format!("cannot wait for {program}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CniError::internal(
            format!("{program} {} failed", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim(),
        ))
    }
}

/// Runs iptables (or ip6tables), waiting for the xtables lock.
pub fn iptables(v6: bool, args: &[&str]) -> CniResult<String> {
    let program = if v6 { "ip6tables" } else { "iptables" };
    let mut full = vec!["-w", "5"];
    full.extend_from_slice(args);
    run(program, &full, None)
}

/// Applies a whole iptables-restore input to one table without flushing others.
pub fn iptables_restore(v6: bool, input: &str) -> CniResult<()> {
    let program = if v6 {
        "ip6tables-restore"
    } else {
        "iptables-restore"
    };
    run(program, &["-w", "5", "--noflush"], Some(input)).map(|_| ())
}

/// Removes a per-attachment chain and every jump to it from the `from`
/// chains, with one listing and (if anything is there) one atomic restore.
pub fn iptables_remove_attachment_chain(
    v6: bool,
    table: &str,
    from: &[&str],
    chain: &str,
) -> CniResult<()> {
    let listing = iptables(v6, &["-t", table, "-S"])?;
    let jump = format!(" -j {chain}");
    let mut script = String::new();
    for line in listing.lines().filter(|l| l.ends_with(&jump)) {
        if let Some(rest) = line.strip_prefix("-A ") {
            if from.iter().any(|c| rest.starts_with(&format!("{c} "))) {
                script.push_str(&format!("-D {rest}\n"));
            }
        }
    }
    if listing.lines().any(|l| l == format!("-N {chain}")) {
        script.push_str(&format!("-F {chain}\n-X {chain}\n"));
    }
    if script.is_empty() {
        return Ok(());
    }
    iptables_restore(v6, &format!("*{table}\n{script}COMMIT\n"))
}

/// Runs an nft script.
pub fn nft(script: &str) -> CniResult<()> {
    run("nft", &["-f", "-"], Some(script)).map(|_| ())
}

/// Lists a chain with rule handles, or None if it does not exist.
pub fn nft_list_chain(family: &str, table: &str, chain: &str) -> Option<String> {
    run("nft", &["-a", "list", "chain", family, table, chain], None).ok()
}

/// Deletes every rule of an nft chain whose text contains `needle`.
pub fn nft_delete_matching(family: &str, table: &str, chain: &str, needle: &str) -> CniResult<()> {
    let Some(listing) = nft_list_chain(family, table, chain) else {
        return Ok(());
    };
    let script: String = listing
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            l.rsplit_once("# handle ")
                .map(|(_, h)| h.trim().to_string())
        })
        .map(|h| format!("delete rule {family} {table} {chain} handle {h}\n"))
        .collect();
    if script.is_empty() {
        Ok(())
    } else {
        nft(&script)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_fit_iptables() {
        let c = chain_name("CNI-", "mynet", "0123456789abcdef");
        assert_eq!(c.len(), 28);
        assert_eq!(chain_name("CNI-DN-", "mynet", "x").len(), 28);
        assert_eq!(c, chain_name("CNI-", "mynet", "0123456789abcdef"));
        assert_ne!(c, chain_name("CNI-", "mynet", "other"));
    }
}
