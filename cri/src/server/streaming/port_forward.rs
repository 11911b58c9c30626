//! Port forwarding: a connection to the pod's localhost, made inside its network
//! namespace (the host's for hostNetwork pods, which have none of their own).

use std::os::fd::AsFd;
use std::path::PathBuf;

use tokio::net::TcpStream;

use crate::streaming::{BackendError, PortForwardStream};

pub async fn run(
    netns: Option<PathBuf>,
    port: u16,
    mut stream: PortForwardStream,
) -> Result<(), BackendError> {
    let mut connection = connect_in(netns, port).await?;
    tokio::io::copy_bidirectional(&mut stream, &mut connection).await?;
    Ok(())
}

/// Connects to localhost:`port` as seen from `netns`: IPv4 first, then IPv6, as
/// containerd does. A socket belongs to the netns it was made in, so a short-lived
/// thread enters the netns (setns affects only the calling thread) to make it.
async fn connect_in(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, BackendError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            let _ = sender.send(connect_blocking(netns, port));
        })?;
    let connection = receiver
        .await
        .map_err(|_| BackendError("the port-forward connector thread died".into()))??;
    connection.set_nonblocking(true)?;
    Ok(TcpStream::from_std(connection)?)
}

fn connect_blocking(
    netns: Option<PathBuf>,
    port: u16,
) -> Result<std::net::TcpStream, BackendError> {
    if let Some(path) = &netns {
        let file = std::fs::File::open(path)
            .map_err(|e| BackendError(format!("opening netns {}: {e}", path.display())))?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| BackendError(format!("entering netns {}: {e}", path.display())))?;
    }
    let v4 = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port));
    v4.or_else(|v4_error| {
        std::net::TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port)).map_err(|v6_error| {
            BackendError(format!(
                "failed to connect to localhost:{port} inside the pod: {v4_error} (IPv6: {v6_error})"
            ))
        })
    })
}
