//! The HTTP side: listening, routing `/exec|/attach|/portforward/<token>`, upgrades.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cache::{CachedRequest, RequestCache};
use super::request::{AttachRequest, ExecRequest, PortForwardRequest};
use super::{StreamingBackend, StreamingConfig, StreamingError, portforward, remotecommand};

pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// State every request handler shares.
pub(crate) struct Shared<B> {
    pub backend: Arc<B>,
    pub config: StreamingConfig,
    pub cache: RequestCache,
    /// Tracks connection and session tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

/// A running streaming server. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
pub struct StreamingServer {
    local_addr: SocketAddr,
    base_url: String,
    cache: Arc<dyn TokenIssuer>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Type-erased access to the cache of a server of any backend.
trait TokenIssuer: Send + Sync {
    fn issue(&self, request: CachedRequest) -> Result<String, StreamingError>;
}

impl<B: StreamingBackend> TokenIssuer for Shared<B> {
    fn issue(&self, request: CachedRequest) -> Result<String, StreamingError> {
        self.cache.insert(request)
    }
}

impl StreamingServer {
    /// Binds the listener and starts serving.
    pub async fn start<B: StreamingBackend>(
        config: StreamingConfig,
        backend: Arc<B>,
    ) -> Result<Self, StreamingError> {
        let listener =
            TcpListener::bind(config.address)
                .await
                .map_err(|source| StreamingError::Bind {
                    address: config.address,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StreamingError::Bind {
                address: config.address,
                source,
            })?;
        let tls = match &config.tls {
            Some(tls) => Some(super::tls::acceptor(tls, local_addr.ip())?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{local_addr}"))
            .trim_end_matches('/')
            .to_owned();
        let shared = Arc::new(Shared {
            backend,
            cache: RequestCache::new(config.token_ttl, config.max_in_flight),
            config,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        });
        let (tasks, shutdown) = (shared.tasks.clone(), shared.shutdown.clone());
        tasks.spawn(accept_loop(listener, tls, shared.clone()));
        tracing::info!(%local_addr, "streaming server listening");
        Ok(Self {
            local_addr,
            base_url,
            cache: shared,
            tasks,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Validates the request and returns the one-time URL serving it.
    pub fn get_exec(&self, request: ExecRequest) -> Result<String, StreamingError> {
        request.validate()?;
        self.url("exec", CachedRequest::Exec(request))
    }

    pub fn get_attach(&self, request: AttachRequest) -> Result<String, StreamingError> {
        request.validate()?;
        self.url("attach", CachedRequest::Attach(request))
    }

    pub fn get_port_forward(&self, request: PortForwardRequest) -> Result<String, StreamingError> {
        request.validate()?;
        self.url("portforward", CachedRequest::PortForward(request))
    }

    fn url(&self, kind: &str, request: CachedRequest) -> Result<String, StreamingError> {
        let token = self.cache.issue(request)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    /// Stops listening, ends every session and waits for their tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn accept_loop<B: StreamingBackend>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared<B>>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.cancelled() => return,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a streaming connection");
                continue;
            }
        };
        let (shared_for_conn, tls) = (shared.clone(), tls.clone());
        shared.tasks.spawn(async move {
            let shutdown = shared_for_conn.shutdown.clone();
            let serve = async move {
                match tls {
                    None => serve_http(socket, shared_for_conn).await,
                    Some(tls) => match tls.accept(socket).await {
                        Ok(socket) => serve_http(socket, shared_for_conn).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "streaming TLS handshake failed")
                        }
                    },
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// Serves HTTP/1.1 requests (and their upgrades) on one connection.
async fn serve_http<B, IO>(io: IO, shared: Arc<Shared<B>>)
where
    B: StreamingBackend,
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(shared, request)) }
    });
    let connection = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "streaming http connection ended");
    }
}

pub(crate) fn text_response(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn not_found() -> HttpResponse {
    text_response(StatusCode::NOT_FOUND, "404 page not found\n")
}

fn route<B: StreamingBackend>(shared: Arc<Shared<B>>, request: Request<Incoming>) -> HttpResponse {
    let path = request.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
        return not_found();
    };
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() || token.contains('/')
    {
        return not_found();
    }
    if request.method() != Method::GET && request.method() != Method::POST {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    }
    // Consumed whatever happens next: a token is good for one attempt.
    let Some(cached) = shared.cache.consume(token) else {
        return not_found();
    };
    match (kind, cached) {
        ("exec", CachedRequest::Exec(exec)) => remotecommand::serve(
            shared,
            request,
            remotecommand::Target::Exec {
                container_id: exec.container_id,
                cmd: exec.cmd,
            },
            remotecommand::Options {
                stdin: exec.stdin,
                stdout: exec.stdout,
                stderr: exec.stderr,
                tty: exec.tty,
            },
        ),
        ("attach", CachedRequest::Attach(attach)) => remotecommand::serve(
            shared,
            request,
            remotecommand::Target::Attach {
                container_id: attach.container_id,
            },
            remotecommand::Options {
                stdin: attach.stdin,
                stdout: attach.stdout,
                stderr: attach.stderr,
                tty: attach.tty,
            },
        ),
        ("portforward", CachedRequest::PortForward(forward)) => {
            portforward::serve(shared, request, forward)
        }
        _ => not_found(),
    }
}
