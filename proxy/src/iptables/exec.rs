//! The seam to the kernel: running iptables-restore and friends. Everything above it
//! is pure and unit-tested with a recording double.

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
    #[error("reading the nf_tables generation: {0}")]
    Generation(std::io::Error),
    #[error("writing sysctl {path}: {source}")]
    Sysctl {
        path: &'static str,
        source: std::io::Error,
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
    /// Whether the iptables tools use the nf_tables backend (else legacy). It decides
    /// how restores are batched: on nf_tables a restore sends only its own rules, but
    /// iptables-nft-restore 1.8.x spends time quadratic in the chains one process
    /// declares, so several small runs cost less; on legacy every restore reads and
    /// rewrites the whole table, so one run it is.
    fn is_nf_tables_backend(&mut self, v6: bool) -> bool;
    /// The nf_tables ruleset generation of the namespace, which every committed change
    /// (ours or anyone's) bumps by one; None on the legacy backend, which has none.
    fn generation(&mut self) -> Result<Option<u32>, ExecError>;
    /// Sets net.ipv4.conf.all.route_localnet=1 (in the proxy's network namespace), which
    /// lets DNAT send packets from 127.0.0.0/8 to other hosts: NodePorts on localhost.
    fn enable_route_localnet(&mut self) -> Result<(), ExecError>;
}

/// Which iptables binaries to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IptablesVariant {
    /// `iptables`, `iptables-restore`...: whatever the host's alternatives select, as upstream.
    #[default]
    System,
    /// `iptables-legacy*`.
    Legacy,
    /// `iptables-nft*`.
    Nft,
}

/// Runs the iptables binaries (`-w` waits for the xtables lock like upstream).
#[derive(Debug, Default)]
pub struct SystemNetfilter {
    variant: IptablesVariant,
    /// Whether the binaries drive nf_tables, learnt from `--version` on first use.
    nft_backend: Option<bool>,
}

impl SystemNetfilter {
    pub fn new(variant: IptablesVariant) -> Self {
        SystemNetfilter {
            variant,
            nft_backend: None,
        }
    }

    /// The program for `base` ("iptables", "iptables-restore", "iptables-save") and family.
    fn binary(&self, v6: bool, base: &str) -> String {
        let base = if v6 {
            base.replacen("iptables", "ip6tables", 1)
        } else {
            base.to_string()
        };
        let infix = match self.variant {
            IptablesVariant::System => return base,
            IptablesVariant::Legacy => "legacy",
            IptablesVariant::Nft => "nft",
        };
        match base.split_once('-') {
            Some((tool, verb)) => format!("{tool}-{infix}-{verb}"),
            None => format!("{base}-{infix}"),
        }
    }
}

const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<std::process::Output, ExecError> {
    crate::command::run_with_input(program, args, stdin).map_err(|source| ExecError::Spawn {
        program: program.to_string(),
        source,
    })
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
        let program = self.binary(v6, "iptables-restore");
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
        let program = self.binary(v6, "iptables-save");
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
        let program = self.binary(v6, "iptables");
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
        let program = self.binary(v6, "iptables");
        let mut args = vec!["-w", "5", "-t", table, "-D", chain];
        args.extend_from_slice(rule);
        // Absent already is fine: deleting is idempotent here.
        run(&program, &args, None).map(|_| ())
    }

    fn chain_exists(&mut self, v6: bool, table: &str, chain: &str) -> Result<bool, ExecError> {
        let program = self.binary(v6, "iptables");
        Ok(run(&program, &["-w", "5", "-t", table, "-S", chain], None)?
            .status
            .success())
    }

    fn create_chain(&mut self, v6: bool, table: &str, chain: &str) -> Result<(), ExecError> {
        let program = self.binary(v6, "iptables");
        if self.chain_exists(v6, table, chain)? {
            return Ok(());
        }
        check(
            &program,
            run(&program, &["-w", "5", "-t", table, "-N", chain], None)?,
        )
        .map(|_| ())
    }

    fn is_nf_tables_backend(&mut self, v6: bool) -> bool {
        if let Some(nft) = self.nft_backend {
            return nft;
        }
        // "iptables v1.8.9 (nf_tables)" or "iptables v1.8.9 (legacy)".
        let program = self.binary(v6, "iptables");
        let nft = run(&program, &["--version"], None)
            .map(|out| String::from_utf8_lossy(&out.stdout).contains("nf_tables"))
            .unwrap_or(false);
        self.nft_backend = Some(nft);
        nft
    }

    fn generation(&mut self) -> Result<Option<u32>, ExecError> {
        if !self.is_nf_tables_backend(false) {
            return Ok(None);
        }
        super::generation::read()
            .map(Some)
            .map_err(ExecError::Generation)
    }

    fn enable_route_localnet(&mut self) -> Result<(), ExecError> {
        let current = std::fs::read_to_string(ROUTE_LOCALNET).unwrap_or_default();
        if current.trim() == "1" {
            return Ok(());
        }
        std::fs::write(ROUTE_LOCALNET, "1").map_err(|source| ExecError::Sysctl {
            path: ROUTE_LOCALNET,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_pick_their_binaries() {
        let system = SystemNetfilter::default();
        assert_eq!(system.binary(false, "iptables-restore"), "iptables-restore");
        assert_eq!(system.binary(true, "iptables"), "ip6tables");
        let legacy = SystemNetfilter::new(IptablesVariant::Legacy);
        assert_eq!(
            legacy.binary(true, "iptables-restore"),
            "ip6tables-legacy-restore"
        );
        assert_eq!(legacy.binary(false, "iptables"), "iptables-legacy");
        let nft = SystemNetfilter::new(IptablesVariant::Nft);
        assert_eq!(nft.binary(false, "iptables-save"), "iptables-nft-save");
    }
}
