//! What the forked child does, from the clone until execve: join/create
//! namespaces, (init only) build the rootfs and wait for `start`, then apply the
//! process spec and exec.
//!
//! The child is a fork of a single-threaded runtime, so it may allocate freely.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Gid, Uid, fork};
use oci_spec::runtime::{Process, Spec};

use super::channel::{Channel, Message};
use super::setup::{self, HostLsm};
use crate::oci::capabilities;
use crate::oci::console;
use crate::oci::error::{Context, OciError, Result};
use crate::oci::hooks::{self, HookKind};
use crate::oci::namespaces::NamespacePlan;
use crate::oci::rootfs::{self, RootfsConfig};
use crate::oci::seccomp::CompiledFilter;
use crate::oci::state::{OciState, Status};
use crate::oci::timens;

/// What the child becomes.
pub enum Role<'a> {
    /// The container's init: builds the rootfs, then blocks on the exec fifo
    /// (opened O_PATH by the runtime) until `start`.
    Init {
        spec: &'a Spec,
        rootfs: RootfsConfig,
        /// None when the container starts right away (`run`).
        exec_fifo: Option<OwnedFd>,
        /// The runtime has prestart/createRuntime hooks to run mid-setup.
        runtime_hooks: bool,
        /// Name of the new session keyring to join (None: --no-new-keyring).
        session_keyring: Option<String>,
    },
    /// A process exec'd into a running container.
    Exec,
}

pub struct ChildConfig<'a> {
    pub role: Role<'a>,
    pub process: &'a Process,
    pub namespaces: &'a NamespacePlan,
    pub channel: Channel,
    pub console_socket: Option<OwnedFd>,
    pub seccomp: Option<&'a CompiledFilter>,
    pub hooks: Option<&'a oci_spec::runtime::Hooks>,
    /// State handed to createContainer/startContainer hooks (pid filled in later).
    pub hook_state: OciState,
    pub extra_env: Vec<String>,
    /// fds 3..3+n stay open in the container (--preserve-fds, LISTEN_FDS).
    pub preserve_fds: i32,
    /// linux.seccomp.listenerPath is set: the filter's notification listener
    /// goes to the runtime, which hands it to the agent.
    pub seccomp_listener: bool,
}

/// Entry point right after clone: never returns. Errors go to the runtime over
/// the channel (and to stderr when the runtime is already gone).
pub fn run(mut config: ChildConfig) -> ! {
    let result = setup_and_exec(&mut config);
    let message = match result {
        Err(e) => format!("container init: {e}"),
        Ok(never) => match never {},
    };
    if config
        .channel
        .send(&Message::Error(message.clone()))
        .is_err()
    {
        eprintln!("berth-runtime: {message}");
    }
    // SAFETY: leaving without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(1) }
}

enum Never {}

/// The runtime's go-ahead after it moved us into the container's cgroup,
/// waited for once; then the cgroup namespace is made (rooted at that cgroup).
#[derive(Default)]
struct CgroupGate {
    passed: std::cell::Cell<bool>,
    /// Our pid as the runtime sees it (for hook state).
    pid: std::cell::Cell<i32>,
}

impl CgroupGate {
    fn pass(&self, config: &ChildConfig) -> Result<()> {
        if self.passed.get() {
            return Ok(());
        }
        let (message, _) = config
            .channel
            .expect(|m| matches!(m, Message::Continue { .. }), "continue")?;
        if let Message::Continue { pid } = message {
            self.pid.set(pid);
        }
        if config.namespaces.creates(CloneFlags::CLONE_NEWCGROUP) {
            unshare(CloneFlags::CLONE_NEWCGROUP).context(|| "unshare(CLONE_NEWCGROUP)".into())?;
        }
        self.passed.set(true);
        Ok(())
    }
}

fn setup_and_exec(config: &mut ChildConfig) -> Result<Never> {
    reset_signals()?;
    // The runtime binary must not be reachable through /proc/<pid>/exe by
    // container processes while we are in their namespaces (CVE-2019-5736).
    nix::sys::prctl::set_dumpable(false).context(|| "prctl(PR_SET_DUMPABLE)".into())?;
    let plan = config.namespaces;
    let single_clone = matches!(config.role, Role::Init { .. }) && plan.single_clone();
    if !single_clone {
        plan.join_all()?;
        let late = plan.new
            & !(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWCGROUP | timens::CLONE_NEWTIME);
        if !late.is_empty() {
            unshare(late).context(|| format!("unshare({late:?})"))?;
        }
        if late.contains(CloneFlags::CLONE_NEWUSER) {
            config.channel.send(&Message::WriteIdMaps)?;
            config
                .channel
                .expect(|m| *m == Message::IdMapsWritten, "id maps")?;
        }
        let new_pid = plan.creates(CloneFlags::CLONE_NEWPID);
        if new_pid {
            unshare(CloneFlags::CLONE_NEWPID).context(|| "unshare(CLONE_NEWPID)".into())?;
        }
        // Entering a pid namespace only applies to children: fork once more.
        if new_pid || plan.joins(CloneFlags::CLONE_NEWPID) {
            // SAFETY: single-threaded process (see module docs).
            match unsafe { fork() }.context(|| "fork".into())? {
                // SAFETY: the intermediate process has nothing to clean up.
                ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
                ForkResult::Child => {}
            }
        }
        config.channel.send_with_credentials(&Message::Pid)?;
    }
    // The runtime moves us into the container's cgroup meanwhile (a migration
    // that waits for an RCU grace period): an init that builds its rootfs does
    // that work in parallel and waits only before its first cgroup mount. With
    // a user namespace it needs its id maps (written by then) from the start.
    let gate = CgroupGate::default();
    let overlap = matches!(config.role, Role::Init { .. })
        && plan.creates(CloneFlags::CLONE_NEWNS)
        && !plan.creates(CloneFlags::CLONE_NEWUSER)
        && !plan.joins(CloneFlags::CLONE_NEWUSER);
    if !overlap {
        gate.pass(config)?;
    }
    if plan.creates(CloneFlags::CLONE_NEWUSER) {
        // Become the namespace's root (if mapped) for the setup that follows.
        let _ = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
        let _ = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    }
    if let Role::Init { spec, rootfs, .. } = &config.role {
        if plan.creates(timens::CLONE_NEWTIME) {
            let offsets = spec
                .linux()
                .as_ref()
                .and_then(|l| l.time_offsets().clone())
                .unwrap_or_default();
            timens::unshare_with_offsets(&offsets, rootfs.in_user_ns)?;
        }
    }
    let process = config.process;
    setup::set_exec_labels(process, HostLsm::detect())?;
    match &config.role {
        Role::Init {
            spec,
            rootfs,
            runtime_hooks,
            session_keyring,
            ..
        } => {
            nix::unistd::setsid().context(|| "setsid".into())?;
            if let Some(name) = session_keyring {
                crate::oci::keyring::join_session_keyring(name)?;
            }
            init_environment(config, spec, rootfs, *runtime_hooks, &gate)?;
        }
        Role::Exec => {
            gate.pass(config)?;
            // Exec'd processes get their own session only with a terminal.
            if process.terminal().unwrap_or(false) {
                nix::unistd::setsid().context(|| "setsid".into())?;
            }
        }
    }
    config.hook_state.pid = gate.pid.get();
    finish_process(config)
}

fn init_environment(
    config: &ChildConfig,
    spec: &Spec,
    rootfs: &RootfsConfig,
    runtime_hooks: bool,
    gate: &CgroupGate,
) -> Result<()> {
    // Device nodes and mount targets get exactly the modes the spec asks for.
    nix::sys::stat::umask(Mode::empty());
    let plan = config.namespaces;
    let new_mount_ns = plan.creates(CloneFlags::CLONE_NEWNS);
    if new_mount_ns {
        rootfs::prepare(spec, rootfs, &mut || gate.pass(config))?;
    }
    gate.pass(config)?;
    if runtime_hooks {
        config.channel.send(&Message::RunRuntimeHooks)?;
        config
            .channel
            .expect(|m| *m == Message::RuntimeHooksDone, "the runtime hooks")?;
    }
    let mut state = config.hook_state.clone();
    state.pid = gate.pid.get();
    state.status = Status::Created;
    hooks::run(HookKind::CreateContainer, config.hooks, &state)?;
    if new_mount_ns {
        rootfs::enter(spec, rootfs)?;
    } else {
        nix::unistd::chroot(&rootfs.rootfs)
            .context(|| format!("chroot {}", rootfs.rootfs.display()))?;
    }
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(hostname)
            .map_err(|e| crate::oci::error::invalid("hostname", e.to_string()))?;
    }
    if let Some(domain) = spec.domainname().as_deref().filter(|h| !h.is_empty()) {
        // SAFETY: pointer and length of a live byte slice.
        let rc = unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) };
        if rc != 0 {
            return Err(crate::oci::error::invalid(
                "domainname",
                std::io::Error::last_os_error().to_string(),
            ));
        }
    }
    for (key, value) in spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().as_ref())
        .into_iter()
        .flatten()
    {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| {
            crate::oci::error::invalid(
                format!("linux.sysctl.{key}"),
                format!("writing {value:?}: {e}"),
            )
        })?;
    }
    if let Some(personality) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) {
        super::sched::set_personality(personality)?;
    }
    if plan.creates(CloneFlags::CLONE_NEWNS) {
        rootfs::protect(spec)?;
    }
    Ok(())
}

fn finish_process(config: &mut ChildConfig) -> Result<Never> {
    let process = config.process;
    if let Some(rlimits) = process.rlimits() {
        setup::set_rlimits(rlimits)?;
    }
    if let Some(scheduler) = process.scheduler() {
        super::sched::set_scheduler(scheduler)?;
    }
    if let Some(priority) = process.io_priority() {
        super::sched::set_io_priority(priority)?;
    }
    if process.terminal().unwrap_or(false) {
        let socket = config.console_socket.take().ok_or_else(|| {
            crate::oci::error::invalid("process.terminal", "a terminal needs a console socket")
        })?;
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        console::setup_pty(&socket, size)?;
    }
    setup::enter_cwd(process.cwd())?;
    let env = setup::environment(process, &config.extra_env);
    let args = process.args().clone().unwrap_or_default();
    let arg0 = args
        .first()
        .ok_or_else(|| crate::oci::error::invalid("process.args", "must not be empty"))?;
    let executable = setup::find_executable(arg0, &env)?;
    let path = CString::new(executable.as_os_str().as_encoded_bytes())
        .map_err(|_| crate::oci::error::invalid("process.args", "NUL byte"))?;
    let argv = setup::cstrings(&args, "process.args")?;
    let envp = setup::cstrings(&env, "process.env")?;
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it while we
    // still have it. With it, as late as possible so setup is not filtered; but
    // a listener must reach the runtime while it still listens (before Ready).
    let early_seccomp = !no_new_privs || config.seccomp_listener;
    if early_seccomp {
        install_seccomp(config)?;
    }
    let caps = process.capabilities().as_ref().map(capabilities::from_spec);
    setup::switch_user(process, caps.as_ref())?;
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(Mode::from_bits_truncate(umask));
    if no_new_privs {
        nix::sys::prctl::set_no_new_privs().context(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
    }
    // Nothing but stdio and the preserved fds may reach the container: the
    // runtime's own fds were relocated above them and are close-on-exec.
    super::fork::cloexec_from(3 + config.preserve_fds)?;
    if let Role::Init {
        exec_fifo, rootfs, ..
    } = &config.role
    {
        config.channel.send(&Message::Ready)?;
        if let Some(exec_fifo) = exec_fifo {
            if rootfs.in_user_ns {
                // Non-dumpable, /proc/self/fd belongs to the host's root, which is
                // unmapped here. Being dumpable is harmless in a user namespace: its
                // root cannot write the host's runtime binary anyway.
                nix::sys::prctl::set_dumpable(true).context(|| "prctl(PR_SET_DUMPABLE)".into())?;
            }
            wait_for_start(exec_fifo)?;
        }
        let mut state = config.hook_state.clone();
        state.status = Status::Running;
        hooks::run(HookKind::StartContainer, config.hooks, &state)?;
    }
    if !early_seccomp {
        install_seccomp(config)?;
    }
    let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(OciError::Init(format!(
        "exec {}: {err}",
        executable.display()
    )))
}

fn install_seccomp(config: &ChildConfig) -> Result<()> {
    let Some(filter) = config.seccomp else {
        return Ok(());
    };
    if !config.seccomp_listener {
        return filter
            .install()
            .context(|| "installing the seccomp filter".into());
    }
    let listener = filter
        .install_with_listener()
        .context(|| "installing the seccomp filter".into())?;
    if let Some(fd) = listener {
        config.channel.send_with_fd(&Message::SeccompListener, fd)?;
        config.channel.expect(
            |m| *m == Message::SeccompListenerDone,
            "the seccomp agent hand-off",
        )?;
        // SAFETY: the kernel gave us this fd; the agent now holds its own copy.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// The container process starts with no blocked signals and default
/// dispositions (the runtime ignores SIGPIPE and may block signals it forwards;
/// both would survive execve).
fn reset_signals() -> Result<()> {
    use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
    // SAFETY: restoring the default disposition installs no handler code.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }
        .context(|| "resetting SIGPIPE".into())?;
    SigSet::all()
        .thread_unblock()
        .context(|| "unblocking signals".into())
}

/// Blocks until `start` opens the exec fifo for reading, then tells it we go.
fn wait_for_start(fifo: &OwnedFd) -> Result<()> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let writer = open(
        path.as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| "opening the exec fifo (is /proc mounted in the container?)".into())?;
    nix::unistd::write(&writer, b"0").context(|| "writing the exec fifo".into())?;
    Ok(())
}
