//! The typed message channel between the runtime and the container process it
//! forks: a SOCK_SEQPACKET socketpair carrying one JSON message per packet.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixCredentials, recvmsg, sendmsg, setsockopt, socketpair, sockopt,
};
use serde::{Deserialize, Serialize};

use crate::oci::error::{Context, OciError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Child → runtime: the user namespace exists, write its id maps.
    WriteIdMaps,
    /// Runtime → child: id maps written.
    IdMapsWritten,
    /// Child → runtime: the process that will exec (sent with SCM_CREDENTIALS so
    /// the kernel gives the runtime its pid in the runtime's pid namespace).
    Pid,
    /// Runtime → child: the process is in its cgroup; carry on. `pid` is its pid
    /// as the runtime sees it (for hook state).
    Continue { pid: i32 },
    /// Child → runtime: the rootfs is mounted; run prestart and createRuntime hooks.
    RunRuntimeHooks,
    /// Runtime → child.
    RuntimeHooksDone,
    /// Child → runtime: setup complete, waiting for start.
    Ready,
    /// Child → runtime: setup failed.
    Error(String),
}

#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

const MAX_MESSAGE: usize = 64 * 1024;

impl Channel {
    /// (runtime end, child end)
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context(|| "socketpair".into())?;
        setsockopt(&a, sockopt::PassCred, &true).context(|| "SO_PASSCRED".into())?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Moves the socket to an fd number >= `min` (to keep clear of preserved fds).
    pub fn relocate(&mut self, min: RawFd) -> Result<()> {
        self.fd = super::fork::dup_above(&self.fd, min)?;
        Ok(())
    }

    pub fn send(&self, message: &Message) -> Result<()> {
        self.send_inner(message, false)
    }

    pub fn send_with_credentials(&self, message: &Message) -> Result<()> {
        self.send_inner(message, true)
    }

    fn send_inner(&self, message: &Message, credentials: bool) -> Result<()> {
        let bytes = serde_json::to_vec(message)
            .map_err(|e| OciError::Init(format!("encoding {message:?}: {e}")))?;
        let iov = [IoSlice::new(&bytes)];
        let creds = UnixCredentials::new();
        let cmsgs = [ControlMessage::ScmCredentials(&creds)];
        let cmsgs: &[ControlMessage] = if credentials { &cmsgs } else { &[] };
        sendmsg::<()>(self.fd.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
            .context(|| format!("sending {message:?}"))?;
        Ok(())
    }

    /// The next message and the sender's pid if it sent credentials; None when the
    /// other end is closed (the child exec'd or exited).
    pub fn recv(&self) -> Result<Option<(Message, Option<i32>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = nix::cmsg_space!(libc::ucred);
        let (len, pid) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = loop {
                match recvmsg::<()>(
                    self.fd.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => {
                        break other.context(|| "receiving from the container process".into())?;
                    }
                }
            };
            let pid = msg
                .cmsgs()
                .ok()
                .into_iter()
                .flatten()
                .find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
                    _ => None,
                });
            (msg.bytes, pid)
        };
        if len == 0 {
            return Ok(None);
        }
        let message = serde_json::from_slice(&buf[..len]).map_err(|e| {
            OciError::Init(format!("malformed message from the container process: {e}"))
        })?;
        Ok(Some((message, pid)))
    }

    /// Waits for one specific message; an Error message or EOF is an error.
    pub fn expect(
        &self,
        wanted: fn(&Message) -> bool,
        what: &str,
    ) -> Result<(Message, Option<i32>)> {
        match self.recv()? {
            Some((Message::Error(e), _)) => Err(OciError::Init(e)),
            Some((m, pid)) if wanted(&m) => Ok((m, pid)),
            Some((m, _)) => Err(OciError::Init(format!("expected {what}, got {m:?}"))),
            None => Err(OciError::Init(format!(
                "the container process exited before {what}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_roundtrip_with_sender_pid() {
        let (runtime, child) = Channel::pair().unwrap();
        child.send_with_credentials(&Message::Pid).unwrap();
        let (message, pid) = runtime.recv().unwrap().unwrap();
        assert_eq!(message, Message::Pid);
        assert_eq!(pid, Some(std::process::id() as i32));
        runtime.send(&Message::Continue { pid: 7 }).unwrap();
        assert_eq!(
            child.recv().unwrap().unwrap().0,
            Message::Continue { pid: 7 }
        );
        drop(child);
        assert!(runtime.recv().unwrap().is_none());
    }

    #[test]
    fn error_messages_become_errors() {
        let (runtime, child) = Channel::pair().unwrap();
        child
            .send(&Message::Error("mounts[2]: boom".into()))
            .unwrap();
        let err = runtime
            .expect(|m| *m == Message::Ready, "ready")
            .unwrap_err();
        assert!(err.to_string().contains("mounts[2]: boom"));
    }
}
