//! `berth-runtime`: a runc-compatible command line over the runtime library, so
//! that containerd (io.containerd.runc.v2 with BinaryName) and podman
//! (--runtime) can drive it. Commands, flags, JSON output and exit codes follow runc.

mod commands;
mod info;
mod logging;
mod process;
mod rootless;
mod wait;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use logging::LogFormat;

pub const DEFAULT_ROOT: &str = "/run/berth-runtime";

#[derive(Debug, Parser)]
#[command(
    name = "berth-runtime",
    version,
    about = "OCI runtime (runc-compatible command line)"
)]
pub struct Cli {
    /// Directory for the containers' state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format.
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd transient units for cgroups (cgroupsPath is "slice:prefix:name").
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto (default: rootless when not root or
    /// in a user namespace); skips cgroups the runtime may not create.
    #[arg(
        long,
        global = true,
        value_enum,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub rootless: Option<rootless::Rootless>,
    /// Accepted for compatibility with runc callers; checkpointing is not supported.
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct CreateArgs {
    /// Bundle directory (holding config.json).
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master of a terminal container.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// File to write the init's pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root (for a ramfs root).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of a new one for the container.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass fds 3..3+N to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container (its init waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create and start a container, and wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(long, short = 'd')]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print the container's OCI state.
    State { id: String },
    /// Send a signal to the container's init (or all its processes).
    Kill {
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// Run a process in a running container.
    Exec {
        #[command(flatten)]
        process: process::ExecProcessArgs,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(long, short = 'd')]
        detach: bool,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: i32,
        /// Accepted for compatibility.
        #[arg(long = "ignore-paused", hide = true)]
        ignore_paused: bool,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the container's processes.
    Ps {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Freeze all processes of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a container's resource limits.
    Update(info::UpdateArgs),
    /// Write a default config.json.
    /// (--rootless writes a spec for a user namespace mapped to the caller.)
    Spec {
        #[arg(long, short = 'b')]
        bundle: Option<PathBuf>,
    },
    /// Print what this runtime supports (runc's features JSON).
    Features,
    /// Print container events (resource statistics).
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
}

/// Parses the command line, runs it and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        eprintln!("{e:#}");
        return 1;
    }
    let logs_to_file = cli.log.is_some();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let message = error_message(&e);
            // Callers (containerd, podman) read the error from the log file.
            if logs_to_file {
                tracing::error!("{message}");
            }
            eprintln!("{message}");
            1
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the
/// message already contains (our errors embed their source).
fn error_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("berth-runtime").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn containerd_create_command_line() {
        let cli = parse(&[
            "--root",
            "/run/containerd/runc/k8s.io",
            "--log",
            "/x/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--console-socket",
            "/tmp/pty.sock",
            "--no-pivot",
            "c1",
        ]);
        assert_eq!(cli.root, PathBuf::from("/run/containerd/runc/k8s.io"));
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(cli.systemd_cgroup);
        let Command::Create(args) = cli.command else {
            panic!("not create")
        };
        assert_eq!((args.id.as_str(), args.no_pivot), ("c1", true));
        assert_eq!(args.console_socket, Some(PathBuf::from("/tmp/pty.sock")));
    }

    #[test]
    fn podman_style_flags_and_defaults() {
        let cli = parse(&[
            "--log-format=json",
            "--rootless=auto",
            "create",
            "-b",
            "/b",
            "--preserve-fds",
            "2",
            "c",
        ]);
        assert_eq!(cli.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(cli.rootless, Some(rootless::Rootless::Auto));
        let Command::Create(args) = cli.command else {
            panic!("not create")
        };
        assert_eq!(args.preserve_fds, 2);
    }

    #[test]
    fn kill_exec_delete_update_forms() {
        let Command::Kill { all, id, signal } = parse(&["kill", "--all", "c", "KILL"]).command
        else {
            panic!()
        };
        assert!(all && id == "c" && signal == "KILL");
        let Command::Kill { signal, .. } = parse(&["kill", "c"]).command else {
            panic!()
        };
        assert_eq!(signal, "SIGTERM");
        let Command::Exec {
            process,
            detach,
            id,
            command,
            ..
        } = parse(&[
            "exec",
            "--process",
            "/p.json",
            "--detach",
            "--pid-file",
            "/x",
            "c",
        ])
        .command
        else {
            panic!()
        };
        assert!(detach && id == "c" && command.is_empty());
        assert_eq!(process.process, Some(PathBuf::from("/p.json")));
        let Command::Exec {
            process, command, ..
        } = parse(&[
            "exec",
            "-t",
            "-e",
            "A=1",
            "--cap",
            "CAP_NET_ADMIN",
            "c",
            "sh",
            "-c",
            "ls -l",
        ])
        .command
        else {
            panic!()
        };
        assert!(process.tty);
        assert_eq!(command, ["sh", "-c", "ls -l"]);
        let Command::Delete { force, .. } = parse(&["delete", "-f", "c"]).command else {
            panic!()
        };
        assert!(force);
        let Command::Update(update) =
            parse(&["update", "--resources", "-", "--pids-limit", "5", "c"]).command
        else {
            panic!()
        };
        assert_eq!(update.resources, Some(PathBuf::from("-")));
        assert_eq!(update.pids_limit, Some(5));
    }
}
