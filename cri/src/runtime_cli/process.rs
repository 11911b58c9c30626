//! Building the process of `exec` from --process or from the container's own
//! process plus the command line's overrides.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxCapabilities, Process};

use crate::oci::capabilities::parse_names;
use crate::oci::spec;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExecProcessArgs {
    /// Path to a process.json (runtime-spec `process`); replaces the other flags.
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    /// Working directory in the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Environment variables (KEY=VALUE), added to the container's.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// UID[:GID] to run as.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Additional gids.
    #[arg(long = "additional-gids", short = 'g')]
    pub additional_gids: Vec<u32>,
    /// Capabilities to add (CAP_NET_ADMIN or NET_ADMIN).
    #[arg(long, short = 'c')]
    pub cap: Vec<String>,
    /// Set no_new_privileges.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// AppArmor profile.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux process label.
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
}

pub fn build(
    base: Option<&Process>,
    args: &ExecProcessArgs,
    command: &[String],
) -> anyhow::Result<Process> {
    if let Some(path) = &args.process {
        return Ok(spec::load_process(path)?);
    }
    anyhow::ensure!(
        !command.is_empty(),
        "exec: a command is required when --process is not given"
    );
    let mut process = base.cloned().unwrap_or_default();
    process.set_args(Some(command.to_vec()));
    process.set_terminal(Some(args.tty));
    let mut env = process.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    process.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    if let Some(user) = &args.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u.parse()?, g.parse()?),
            None => (user.parse()?, 0),
        };
        let mut spec_user = process.user().clone();
        spec_user.set_uid(uid);
        spec_user.set_gid(gid);
        process.set_user(spec_user);
    }
    if !args.additional_gids.is_empty() {
        let mut spec_user = process.user().clone();
        spec_user.set_additional_gids(Some(args.additional_gids.clone()));
        process.set_user(spec_user);
    }
    if !args.cap.is_empty() {
        parse_names(&args.cap)?;
        let mut caps: LinuxCapabilities = process.capabilities().clone().unwrap_or_default();
        let added: Vec<oci_spec::runtime::Capability> = args
            .cap
            .iter()
            .map(|c| c.to_ascii_uppercase().trim_start_matches("CAP_").parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--cap: {e}"))?;
        let extend = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut set = set.clone().unwrap_or_default();
            set.extend(added.iter().copied());
            Some(set)
        };
        caps.set_bounding(extend(caps.bounding()));
        caps.set_effective(extend(caps.effective()));
        caps.set_permitted(extend(caps.permitted()));
        process.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &args.apparmor {
        process.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &args.process_label {
        process.set_selinux_label(Some(label.clone()));
    }
    Ok(process)
}
