//! Handing a seccomp notification listener to the agent named by
//! `linux.seccomp.listenerPath`: the container process state as JSON plus the listener
//! fd over SCM_RIGHTS, as the runtime spec describes (and runc does).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use oci_spec::runtime::{ContainerProcessState, SECCOMP_FD_NAME, State};

use super::SeccompError;

/// Sends `listener` (from [`CompiledFilter::install_with_listener`](super::CompiledFilter::install_with_listener),
/// already received by the runtime) and the container `state` to the agent at `path`.
/// `pid` is the container process' pid; `metadata` is `linux.seccomp.listenerMetadata`.
pub fn send_listener_fd(
    path: &Path,
    listener: BorrowedFd<'_>,
    pid: i32,
    metadata: Option<&str>,
    state: &State,
) -> Result<(), SeccompError> {
    let listener_err = |source: std::io::Error| SeccompError::Listener {
        path: path.display().to_string(),
        source,
    };
    let message = process_state(pid, metadata, state);
    let json = serde_json::to_vec(&message).map_err(|e| listener_err(e.into()))?;
    let stream = UnixStream::connect(path).map_err(listener_err)?;
    let fds = [listener.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(&json)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| listener_err(e.into()))?;
    if sent != json.len() {
        return Err(listener_err(std::io::Error::other(format!(
            "sent {sent} of {} bytes",
            json.len()
        ))));
    }
    Ok(())
}

fn process_state(pid: i32, metadata: Option<&str>, state: &State) -> ContainerProcessState {
    let mut message = ContainerProcessState::default();
    message.set_version(state.version().clone());
    message.set_fds(vec![SECCOMP_FD_NAME.to_string()]);
    message.set_pid(pid);
    message.set_metadata(metadata.map(str::to_string));
    message.set_state(state.clone());
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSliceMut;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixListener;

    use nix::sys::socket::{ControlMessageOwned, recvmsg};

    #[test]
    fn agent_receives_state_and_fd() {
        let dir = std::env::temp_dir().join(format!("berth-seccomp-agent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("agent.sock");
        let _ = std::fs::remove_file(&sock);
        let agent = UnixListener::bind(&sock).unwrap();
        let passed = std::fs::File::open("/dev/null").unwrap();
        let mut state = State::default();
        state.set_id("ctr1".into());
        state.set_version("1.2.0".into());
        send_listener_fd(&sock, passed.as_fd(), 4242, Some("meta"), &state).unwrap();

        let (conn, _) = agent.accept().unwrap();
        let mut buf = vec![0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(r) = c {
                fds.extend(r);
            }
        }
        let len = msg.bytes;
        assert_eq!(fds.len(), 1);
        let _owned = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        let got: ContainerProcessState = serde_json::from_slice(&buf[..len]).unwrap();
        assert_eq!(got.pid(), &4242);
        assert_eq!(got.fds(), &vec!["seccompFd".to_string()]);
        assert_eq!(got.metadata().as_deref(), Some("meta"));
        assert_eq!(got.state().id(), "ctr1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
