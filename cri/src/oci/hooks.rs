//! OCI hooks: each hook runs with the container's state JSON on stdin, its own
//! args and env, and an optional timeout.

use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use oci_spec::runtime::Hook;

use super::error::{OciError, Result};
use super::state::OciState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    pub fn select(self, hooks: &oci_spec::runtime::Hooks) -> &[Hook] {
        #[allow(deprecated)]
        let list = match self {
            HookKind::Prestart => hooks.prestart(),
            HookKind::CreateRuntime => hooks.create_runtime(),
            HookKind::CreateContainer => hooks.create_container(),
            HookKind::StartContainer => hooks.start_container(),
            HookKind::Poststart => hooks.poststart(),
            HookKind::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or_default()
    }
}

/// Runs the hooks of `kind` in order; the first failure stops the sequence.
pub fn run(
    kind: HookKind,
    hooks: Option<&oci_spec::runtime::Hooks>,
    state: &OciState,
) -> Result<()> {
    let Some(hooks) = hooks else { return Ok(()) };
    let list = kind.select(hooks);
    if list.is_empty() {
        return Ok(());
    }
    let json =
        serde_json::to_vec(state).map_err(|e| OciError::Init(format!("encoding state: {e}")))?;
    for (index, hook) in list.iter().enumerate() {
        run_one(hook, &json).map_err(|reason| OciError::Hook {
            kind: kind.name(),
            index,
            path: hook.path().display().to_string(),
            reason,
        })?;
    }
    Ok(())
}

fn run_one(hook: &Hook, state: &[u8]) -> std::result::Result<(), String> {
    let mut command = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    if let Some((arg0, rest)) = args.split_first() {
        command.arg0(arg0).args(rest);
    }
    command.env_clear();
    for entry in hook.env().iter().flatten() {
        if let Some((k, v)) = entry.split_once('=') {
            command.env(k, v);
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("starting: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state);
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    if let Some(timeout) = timeout {
        if !wait_exit(child.id() as i32, timeout)? {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {}s", timeout.as_secs()));
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let mut reason = format!("exited with {}", output.status);
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        if !text.trim().is_empty() {
            reason.push_str(&format!(": {}", text.trim()));
        }
    }
    Err(reason)
}

/// Waits for process `pid` to exit (without reaping it) for at most `timeout`.
fn wait_exit(pid: i32, timeout: Duration) -> std::result::Result<bool, String> {
    // SAFETY: pidfd_open takes a pid and flags.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the syscall returned a new descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) => return Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::state::Status;

    fn state() -> OciState {
        OciState {
            oci_version: "1.2.0".into(),
            id: "c1".into(),
            pid: 42,
            status: Status::Created,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: String::new(),
            owner: String::new(),
            annotations: Default::default(),
        }
    }

    fn hooks(json: &str) -> oci_spec::runtime::Hooks {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hook_gets_state_on_stdin_args_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hooks(&format!(
            r#"{{"poststart":[{{"path":"/bin/sh","args":["sh","-c","cat > {0}; echo \"$1 $FOO\" >> {0}","x","arg1"],"env":["FOO=bar"]}}]}}"#,
            out.display()
        ));
        run(HookKind::Poststart, Some(&h), &state()).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(written.contains(r#""id":"c1""#), "{written}");
        assert!(written.ends_with("arg1 bar\n"), "{written}");
    }

    #[test]
    fn failing_hook_is_named_with_its_output() {
        let h = hooks(
            r#"{"createRuntime":[{"path":"/bin/true"},{"path":"/bin/sh","args":["sh","-c","echo nope >&2; exit 3"]}]}"#,
        );
        let err = run(HookKind::CreateRuntime, Some(&h), &state())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("createRuntime hook [1] (/bin/sh)"), "{err}");
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn slow_hook_times_out() {
        let h = hooks(r#"{"prestart":[{"path":"/bin/sleep","args":["sleep","30"],"timeout":1}]}"#);
        let err = run(HookKind::Prestart, Some(&h), &state())
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out"), "{err}");
    }
}
