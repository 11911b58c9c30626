//! `berth-runtime`: a runc-compatible command line over the runtime library, so
//! that containerd (io.containerd.runc.v2 with BinaryName) and podman
//! (--runtime) can drive it. Commands, flags, JSON output and exit codes follow runc.

mod commands;
mod info;
mod logging;
mod process;
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
    /// Rootless mode: true, false or auto (accepted for compatibility).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
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
    /// Do not create a session keyring (accepted; no keyring is created).
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
