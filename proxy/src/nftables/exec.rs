//! The seam to the kernel for nftables mode: `nft -f -` and small listings.

use crate::iptables::ExecError;
use std::io::Write;
use std::process::{Command, Stdio};

pub trait Nft: Send {
    /// Applies `script` as one transaction.
    fn apply(&mut self, script: &str) -> Result<(), ExecError>;
    /// Names of the chains (or sets, with `sets`) in `family table`; empty if there is no table.
    fn list(&mut self, family: &str, table: &str, sets: bool) -> Result<Vec<String>, ExecError>;
    /// Whether `family table` exists. Only the table list is read: listing anything
    /// inside a big table makes nft fetch the whole ruleset, which takes seconds.
    fn table_exists(&mut self, family: &str, table: &str) -> bool;
}

#[derive(Default)]
pub struct SystemNft;

fn nft(args: &[&str], stdin: Option<&str>) -> Result<std::process::Output, ExecError> {
    let spawn = |source| ExecError::Spawn {
        program: "nft".into(),
        source,
    };
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(spawn)?;
    }
    child.wait_with_output().map_err(spawn)
}

impl Nft for SystemNft {
    fn apply(&mut self, script: &str) -> Result<(), ExecError> {
        let out = nft(&["-f", "-"], Some(script))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ExecError::Failed {
                program: "nft -f".into(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn list(&mut self, family: &str, table: &str, sets: bool) -> Result<Vec<String>, ExecError> {
        let what = if sets { "sets" } else { "chains" };
        let out = nft(&["list", what, family], None)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut in_table = false;
        let mut names = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("table ") {
                in_table = rest.trim_end_matches(" {").split_whitespace().last() == Some(table);
            } else if in_table {
                let kw = if sets {
                    ["set ", "map "].iter().find_map(|k| line.strip_prefix(k))
                } else {
                    line.strip_prefix("chain ")
                };
                if let Some(name) = kw {
                    names.push(
                        name.trim_end_matches(" {")
                            .trim()
                            .trim_matches('"')
                            .to_string(),
                    );
                }
            }
        }
        Ok(names)
    }

    fn table_exists(&mut self, family: &str, table: &str) -> bool {
        let wanted = format!("table {family} {table}");
        nft(&["list", "tables", family], None).is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.trim() == wanted)
        })
    }
}
