//! `exec`: starts another process inside a running container: it joins all the
//! container's namespaces and its cgroup and gets its own process spec.

use std::path::PathBuf;

use nix::unistd::Pid;
use oci_spec::runtime::Process;

use crate::oci::console;
use crate::oci::error::{OciError, Result};
use crate::oci::namespaces::NamespacePlan;
use crate::oci::process::channel::{Channel, Message};
use crate::oci::process::child::{self, ChildConfig, Role};
use crate::oci::process::fork::{Forked, clone_with, dup_above};
use crate::oci::seccomp;
use crate::oci::state::{StateStore, Status};

#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub id: String,
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    pub extra_env: Vec<String>,
}

/// The exec'd process. `is_child` says whether it is our direct child (else it
/// is reparented to us only if we are a child subreaper).
#[derive(Debug, Clone, Copy)]
pub struct ExecProcess {
    pub pid: i32,
    pub is_child: bool,
}

pub fn exec(store: &StateStore, options: &ExecOptions) -> Result<ExecProcess> {
    let state = store.load(&options.id)?;
    let invalid = |reason: &str| OciError::InvalidState {
        id: options.id.clone(),
        reason: reason.into(),
    };
    match state.status(&store.dir(&options.id)) {
        Status::Running | Status::Created => {}
        Status::Paused => return Err(invalid("cannot exec in a paused container")),
        _ => return Err(invalid("cannot exec in a stopped container")),
    }
    let plan = NamespacePlan::of_process(state.pid)?;
    let compiled = state.seccomp.as_ref().map(seccomp::compile).transpose()?;
    let manager = state.cgroup_manager()?;
    let above = 3 + options.preserve_fds;
    let console_socket = options
        .console_socket
        .as_deref()
        .map(console::connect_socket)
        .transpose()?;
    let console_socket = match console_socket {
        Some(fd) if above > 3 => Some(dup_above(&fd, above)?),
        other => other,
    };
    let (runtime_end, mut child_end) = Channel::pair()?;
    if options.preserve_fds > 0 {
        child_end.relocate(above)?;
    }
    let child_pid = match clone_with(nix::sched::CloneFlags::empty())? {
        Forked::Child => {
            drop(runtime_end);
            child::run(ChildConfig {
                role: Role::Exec,
                process: &options.process,
                namespaces: &plan,
                channel: child_end,
                console_socket,
                seccomp: compiled.as_ref(),
                hooks: None,
                hook_state: state.oci_state(Status::Running),
                extra_env: options.extra_env.clone(),
                preserve_fds: options.preserve_fds,
            })
        }
        Forked::Parent(pid) => pid.as_raw(),
    };
    drop(child_end);
    drop(console_socket);
    let result = finish(&runtime_end, child_pid, manager.as_ref(), &options.process);
    if result.is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(child_pid), nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(child_pid), None);
    }
    let pid = result?;
    let is_child = pid == child_pid;
    if !is_child {
        let _ = nix::sys::wait::waitpid(Pid::from_raw(child_pid), None);
    }
    if let Some(pid_file) = &options.pid_file {
        super::write_pid_file(pid_file, pid)?;
    }
    Ok(ExecProcess { pid, is_child })
}

fn finish(
    channel: &Channel,
    child_pid: i32,
    manager: &dyn crate::oci::cgroups::CgroupManager,
    process: &Process,
) -> Result<i32> {
    let (_, pid) = channel.expect(|m| *m == Message::Pid, "the exec'd process pid")?;
    let pid = pid.unwrap_or(child_pid);
    let joined = manager.add_process(pid);
    if let Err(e) = joined {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        return Err(e.into());
    }
    if let Some(value) = process.oom_score_adj() {
        super::set_oom_score_adj(pid, value)?;
    }
    channel.send(&Message::Continue { pid })?;
    // The channel is close-on-exec: EOF means the process exec'd.
    match channel.recv()? {
        None => Ok(pid),
        Some((Message::Error(e), _)) => Err(OciError::Init(e)),
        Some((other, _)) => Err(OciError::Init(format!(
            "unexpected {other:?} from the exec'd process"
        ))),
    }
}
