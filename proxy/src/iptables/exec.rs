//! The seam to the kernel: running iptables-restore and friends. Everything above it
//! is pure and unit-tested with a recording double.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// The operations the iptables backend needs from the system, per IP family.
pub trait Netfilter: Send {
    /// `iptables-restore --noflush` of `input`.
    fn restore(&mut self, v6: bool, input: &str) -> Result<(), ExecError>;
    /// Names of the chains in `table`.
    fn chains(&mut self, v6: bool, table: &str) -> Result<Vec<String>, ExecError>;
    /// Adds `rule` at the top of `chain` unless it is already there.
    fn ensure_rule(
        &mut self,
        v6: bool,
        table: &str,
        chain: &str,
        rule: &[&str],
    ) -> Result<(), ExecError>;
    /// Removes `rule` from `chain` if present.
    fn delete_rule(
        &mut self,
        v6: bool,
        table: &str,
        chain: &str,
        rule: &[&str],
    ) -> Result<(), ExecError>;
    fn chain_exists(&mut self, v6: bool, table: &str, chain: &str) -> Result<bool, ExecError>;
    fn create_chain(&mut self, v6: bool, table: &str, chain: &str) -> Result<(), ExecError>;
}

/// Runs the iptables binaries (`-w` waits for the xtables lock like upstream).
#[derive(Default)]
pub struct SystemNetfilter;

fn binary(v6: bool, base: &str) -> String {
    if v6 {
        base.replacen("iptables", "ip6tables", 1)
    } else {
        base.to_string()
    }
}

fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<std::process::Output, ExecError> {
    let spawn = |source| ExecError::Spawn {
        program: program.to_string(),
        source,
    };
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
        .map_err(spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(spawn)?;
    }
    child.wait_with_output().map_err(spawn)
}

fn check(program: &str, out: std::process::Output) -> Result<std::process::Output, ExecError> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(ExecError::Failed {
            program: program.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Netfilter for SystemNetfilter {
    fn restore(&mut self, v6: bool, input: &str) -> Result<(), ExecError> {
        let program = binary(v6, "iptables-restore");
        check(
            &program,
            run(
                &program,
                &["-w", "5", "--noflush", "--counters"],
                Some(input),
            )?,
        )
        .map(|_| ())
    }

    fn chains(&mut self, v6: bool, table: &str) -> Result<Vec<String>, ExecError> {
        let program = binary(v6, "iptables-save");
        let out = check(&program, run(&program, &["-t", table], None)?)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect())
    }

    fn ensure_rule(
        &mut self,
        v6: bool,
        table: &str,
        chain: &str,
        rule: &[&str],
    ) -> Result<(), ExecError> {
        let program = binary(v6, "iptables");
        let mut args = vec!["-w", "5", "-t", table, "-C", chain];
        args.extend_from_slice(rule);
        if run(&program, &args, None)?.status.success() {
            return Ok(());
        }
        let mut args = vec!["-w", "5", "-t", table, "-I", chain];
        args.extend_from_slice(rule);
        check(&program, run(&program, &args, None)?).map(|_| ())
    }

    fn delete_rule(
        &mut self,
        v6: bool,
        table: &str,
        chain: &str,
        rule: &[&str],
    ) -> Result<(), ExecError> {
        let program = binary(v6, "iptables");
        let mut args = vec!["-w", "5", "-t", table, "-D", chain];
        args.extend_from_slice(rule);
        // Absent already is fine: deleting is idempotent here.
        run(&program, &args, None).map(|_| ())
    }

    fn chain_exists(&mut self, v6: bool, table: &str, chain: &str) -> Result<bool, ExecError> {
        let program = binary(v6, "iptables");
        Ok(run(&program, &["-w", "5", "-t", table, "-S", chain], None)?
            .status
            .success())
    }

    fn create_chain(&mut self, v6: bool, table: &str, chain: &str) -> Result<(), ExecError> {
        let program = binary(v6, "iptables");
        if self.chain_exists(v6, table, chain)? {
            return Ok(());
        }
        check(
            &program,
            run(&program, &["-w", "5", "-t", table, "-N", chain], None)?,
        )
        .map(|_| ())
    }
}
