//! Runs a netfilter tool (iptables-restore, ipset, ...) with optional input on its stdin
//! and collects what it printed.

use std::io::Write;
use std::process::{Command, Output, Stdio};

pub(crate) fn run_with_input(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> std::io::Result<Output> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    child.wait_with_output()
}
