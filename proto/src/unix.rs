//! gRPC over unix sockets: the transport every CRI client and server uses.
//!
//! tonic speaks TCP out of the box; these helpers plug a tokio `UnixStream`
//! in on the client side and a `UnixListener` on the server side.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// Mode of a socket made by [`bind_unix`]: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// URI scheme of CRI endpoints (`--container-runtime-endpoint`, crictl).
const UNIX_SCHEME: &str = "unix://";

/// Placeholder authority for HTTP/2 requests; the socket path decides the
/// peer. gRPC clients over unix sockets conventionally send "localhost".
const PLACEHOLDER_URI: &str = "http://localhost";

/// Failure to reach or serve a unix socket; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum UnixSocketError {
    #[error("endpoint {endpoint:?}: only unix sockets are supported (unix:///path or /path)")]
    UnsupportedEndpoint { endpoint: String },
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{path} is in use by a running server")]
    InUse { path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("serving gRPC on {path}: {source}")]
    Serve {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UnixSocketError {
    let path = path.to_path_buf();
    move |source| UnixSocketError::Io {
        action,
        path,
        source,
    }
}

/// Socket path of a CRI endpoint: `unix:///run/x.sock` or a plain path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, UnixSocketError> {
    let path = endpoint.strip_prefix(UNIX_SCHEME).unwrap_or(endpoint);
    if path.is_empty() || path.contains("://") {
        return Err(UnixSocketError::UnsupportedEndpoint {
            endpoint: endpoint.to_string(),
        });
    }
    Ok(PathBuf::from(path))
}

/// Connects a gRPC channel to the server on the unix socket `path`.
///
/// Connects once eagerly, so a missing or dead server is reported here; the
/// channel reconnects to the same path by itself later on. Wrap it in the
/// clients, e.g. [`crate::runtime_client`] / [`crate::image_client`].
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Channel, UnixSocketError> {
    let path = path.as_ref().to_path_buf();
    let connect_path = path.clone();
    let connector = service_fn(move |_: Uri| {
        let path = connect_path.clone();
        async move { UnixStream::connect(path).await.map(TokioIo::new) }
    });
    Endpoint::from_static(PLACEHOLDER_URI)
        .connect_with_connector(connector)
        .await
        .map_err(|source| UnixSocketError::Connect { path, source })
}

/// Listens on the unix socket `path` with mode [`SOCKET_MODE`].
///
/// Creates missing parent directories. A leftover socket from a server that
/// is gone is replaced; a socket some server still answers on, or a file
/// that is not a socket, is an error and left alone.
pub fn bind_unix(path: impl AsRef<Path>) -> Result<UnixListenerStream, UnixSocketError> {
    let path = path.as_ref();
    remove_stale_socket(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_error("creating directory for", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io_error("binding", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_error("setting permissions of", path))?;
    Ok(UnixListenerStream::new(listener))
}

fn remove_stale_socket(path: &Path) -> Result<(), UnixSocketError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("inspecting", path)(e)),
    };
    if !metadata.file_type().is_socket() {
        return Err(UnixSocketError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(UnixSocketError::InUse {
            path: path.to_path_buf(),
        });
    }
    std::fs::remove_file(path).map_err(io_error("removing stale socket", path))
}

/// Serves `router` on the unix socket `path` (see [`bind_unix`]) until
/// `shutdown` completes, then removes the socket file.
///
/// ```no_run
/// # async fn example(runtime: impl berth_proto::runtime::v1::runtime_service_server::RuntimeService) -> Result<(), berth_proto::UnixSocketError> {
/// let router = tonic::transport::Server::builder().add_service(berth_proto::runtime_server(runtime));
/// berth_proto::serve_unix(router, "/run/berth/cri.sock", std::future::pending()).await
/// # }
/// ```
pub async fn serve_unix(
    router: Router,
    path: impl AsRef<Path>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), UnixSocketError> {
    let path = path.as_ref();
    let incoming = bind_unix(path)?;
    let served = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|source| UnixSocketError::Serve {
            path: path.to_path_buf(),
            source,
        });
    // The listener is gone: leaving the file would only make clients see
    // "connection refused" instead of "no such file".
    let removed = match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing socket", path)(e)),
        _ => Ok(()),
    };
    served.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms_resolve_to_the_socket_path() {
        for endpoint in ["unix:///run/berth/cri.sock", "/run/berth/cri.sock"] {
            assert_eq!(
                socket_path(endpoint).expect(endpoint),
                Path::new("/run/berth/cri.sock")
            );
        }
    }

    #[test]
    fn non_unix_endpoints_are_rejected_by_name() {
        for endpoint in ["tcp://127.0.0.1:1234", "npipe:////./pipe/x", "", "unix://"] {
            let err = socket_path(endpoint).expect_err(endpoint);
            assert!(err.to_string().contains(&format!("{endpoint:?}")), "{err}");
        }
    }
}
