//! The lifecycle commands.

use std::io::Write;

use anyhow::Context as _;

use super::{Cli, Command, CreateArgs, info, process, wait};
use crate::oci::container::{self, create::CreateOptions, exec::ExecOptions};
use crate::oci::state::StateStore;

pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let store = StateStore::new(&cli.root);
    let systemd = cli.systemd_cgroup;
    let rootless = super::rootless::Rootless::resolve(cli.rootless, systemd);
    match cli.command {
        Command::Create(args) => {
            container::create::create(&store, &create_options(&args, systemd, rootless))?;
            Ok(0)
        }
        Command::Start { id } => {
            container::start::start(&store, &id)?;
            Ok(0)
        }
        Command::Run {
            create,
            detach,
            keep,
        } => run(&store, &create, systemd, rootless, detach, keep),
        Command::State { id } => {
            let state = container::state::state(&store, &id)?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let parsed = container::kill::parse_signal(&signal)
                .with_context(|| format!("unknown signal {signal:?}"))?;
            container::kill::kill(&store, &id, parsed, all)?;
            Ok(0)
        }
        Command::Delete { force, id } => {
            container::delete::delete(&store, &id, force)?;
            Ok(0)
        }
        Command::Exec {
            process: args,
            console_socket,
            detach,
            pid_file,
            preserve_fds,
            id,
            command,
            ..
        } => {
            let base = store.load(&id)?.process;
            let process = process::build(base.as_ref(), &args, &command)?;
            let (preserve_fds, extra_env) = listen_fds(preserve_fds);
            let own_console =
                own_console(&store, &id, process.terminal(), &console_socket, detach)?;
            let console_socket = own_console
                .as_ref()
                .map(|c| c.path().to_path_buf())
                .or(console_socket);
            let options = ExecOptions {
                id,
                process,
                console_socket,
                pid_file,
                preserve_fds,
                extra_env,
            };
            if !detach {
                become_subreaper()?;
            }
            let exec = container::exec::exec(&store, &options)?;
            if detach {
                return Ok(0);
            }
            let signals = wait::block_signals()?;
            let pty = own_console.map(|c| c.receive()).transpose()?;
            wait::wait_forwarding(exec.pid, signals, pty)
        }
        Command::Ps {
            format,
            id,
            ps_args,
        } => info::ps(&store, &id, &format, &ps_args),
        Command::List { format, quiet } => info::list(&store, &format, quiet),
        Command::Pause { id } => {
            container::pause::pause(&store, &id)?;
            Ok(0)
        }
        Command::Resume { id } => {
            container::pause::resume(&store, &id)?;
            Ok(0)
        }
        Command::Update(args) => info::update(&store, &args),
        Command::Spec { bundle } => info::spec(bundle.as_deref(), rootless),
        Command::Features => info::features(),
        Command::Events {
            stats,
            interval,
            id,
        } => info::events(&store, &id, stats, &interval),
    }
}

fn create_options(args: &CreateArgs, systemd_cgroup: bool, rootless: bool) -> CreateOptions {
    let (preserve_fds, extra_env) = listen_fds(args.preserve_fds);
    CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.clone(),
        console_socket: args.console_socket.clone(),
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        start_immediately: false,
        preserve_fds,
        systemd_cgroup,
        extra_env,
        rootless,
    }
}

/// Socket-activation fds handed to us (LISTEN_FDS) go on to the container, as
/// runc does: they follow stdio, so they count as preserved fds.
fn listen_fds(preserve_fds: i32) -> (i32, Vec<String>) {
    let listen: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if listen <= 0 {
        return (preserve_fds, Vec::new());
    }
    (
        preserve_fds + listen,
        vec![format!("LISTEN_FDS={listen}"), "LISTEN_PID=1".to_string()],
    )
}

fn become_subreaper() -> anyhow::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER)")
}

/// A foreground terminal process without --console-socket: we take the pty.
fn own_console(
    store: &StateStore,
    id: &str,
    terminal: Option<bool>,
    console_socket: &Option<std::path::PathBuf>,
    detach: bool,
) -> anyhow::Result<Option<wait::OwnConsole>> {
    if !terminal.unwrap_or(false) || console_socket.is_some() || detach {
        return Ok(None);
    }
    std::fs::create_dir_all(store.root())?;
    let path = store
        .root()
        .join(format!(".{id}.{}.console", std::process::id()));
    Ok(Some(wait::OwnConsole::listen(&path)?))
}

/// process.terminal of the bundle's config (read loosely: create validates).
fn bundle_wants_terminal(bundle: &std::path::Path) -> Option<bool> {
    let json = std::fs::read(bundle.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_slice(&json).ok()?;
    config.pointer("/process/terminal")?.as_bool()
}

fn run(
    store: &StateStore,
    args: &CreateArgs,
    systemd: bool,
    rootless: bool,
    detach: bool,
    keep: bool,
) -> anyhow::Result<i32> {
    if !detach {
        become_subreaper()?;
    }
    let mut options = create_options(args, systemd, rootless);
    let terminal = bundle_wants_terminal(&args.bundle);
    let own_console = own_console(store, &args.id, terminal, &args.console_socket, detach)?;
    if let Some(console) = &own_console {
        options.console_socket = Some(console.path().to_path_buf());
    }
    // The container starts as soon as create returns: no exec fifo round trip.
    // Signals are queued from before it exists (the child resets its mask).
    options.start_immediately = true;
    let signals = if detach {
        None
    } else {
        Some(wait::block_signals()?)
    };
    let state = container::create::create(store, &options)?;
    container::start::poststart(&state);
    let Some(signals) = signals else {
        return Ok(0);
    };
    let pty = match own_console.map(|c| c.receive()).transpose() {
        Ok(pty) => pty,
        Err(e) => {
            let _ = container::delete::delete(store, &args.id, true);
            return Err(e);
        }
    };
    let code = wait::wait_forwarding(state.pid, signals, pty)?;
    let _ = std::io::stdout().flush();
    if !keep {
        container::delete::delete(store, &args.id, true)?;
    }
    Ok(code)
}
