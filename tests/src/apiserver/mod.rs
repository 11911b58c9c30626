//! An in-process Kubernetes API server for tests.
//!
//! HTTPS with its own CA, a kubeconfig for clients, and the API semantics clients rely
//! on: list/watch with resourceVersion, bookmarks, 410 Gone for compacted versions,
//! label and field selectors, optimistic concurrency (409), status subresources,
//! JSON/merge/strategic-merge patch, and errors as `Status` objects. It serves v1
//! Namespaces, Services, Nodes and discovery.k8s.io/v1 EndpointSlices; more types are
//! added in `resources`.
//!
//! The server runs on its own thread and runtime, so it serves sync and async tests alike.

mod discovery;
mod http;
mod patch;
mod resources;
mod selectors;
mod services;
mod status;
mod store;
mod tls;

pub use resources::{ENDPOINT_SLICES, NAMESPACES, NODES, ResourceType, SERVICES};
pub use status::ApiError;

use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("generating the fixture's certificates: {0}")]
    Tls(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("invalid fixture option: {0}")]
    Options(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FixtureError {
    let context = context.into();
    move |source| FixtureError::Io { context, source }
}

/// Knobs of the fixture; the defaults match a stock single-stack cluster.
pub struct Options {
    /// Service CIDRs, primary family first (a second one makes the cluster dual-stack).
    pub service_cidrs: Vec<String>,
    pub node_port_range: (u16, u16),
    /// How many change events are retained; watches from older versions get 410 Gone.
    pub event_window: usize,
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            service_cidrs: vec!["10.96.0.0/16".to_string()],
            node_port_range: (30000, 32767),
            event_window: 1000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// A running fixture server. Dropping it stops the server.
pub struct ApiServer {
    shared: Arc<http::Shared>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    ca_cert_pem: String,
    ca_key_pem: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    pub fn start() -> Result<Self, FixtureError> {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Result<Self, FixtureError> {
        // The workspace enables two rustls crypto backends (kube's ring and
        // reqwest's aws-lc-rs), so kube clients of this fixture in the test
        // process need the default named. Err means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pki = tls::Pki::generate()?;
        let cidrs: Vec<&str> = options.service_cidrs.iter().map(String::as_str).collect();
        let allocator = services::ServiceAllocator::new(&cidrs, options.node_port_range)
            .map_err(FixtureError::Options)?;
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding 127.0.0.1:0"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("making the listener non-blocking"))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the listener address"))?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(http::Shared {
            store: Mutex::new(store::Store::new(options.event_window, allocator)),
            token: token.clone(),
            address: addr.to_string(),
            bookmark_interval: options.bookmark_interval,
        });
        let dir = tempfile::tempdir().map_err(io("creating the fixture directory"))?;
        write_kubeconfig(
            &dir.path().join("kubeconfig"),
            addr,
            &pki.ca_cert_pem,
            &token,
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io("starting the fixture runtime"))?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel();
        let server_shared = shared.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config.clone());
        let thread = std::thread::Builder::new()
            .name("apiserver-fixture".into())
            .spawn(move || runtime.block_on(serve(listener, acceptor, server_shared, stopped)))
            .map_err(io("spawning the fixture thread"))?;
        Ok(ApiServer {
            shared,
            addr,
            dir,
            ca_cert_pem: pki.ca_cert_pem,
            ca_key_pem: pki.ca_key_pem,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A kubeconfig (cluster, user with a bearer token, current context) for this server.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    pub fn ca_key_pem(&self) -> &str {
        &self.ca_key_pem
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    fn store(&self) -> std::sync::MutexGuard<'_, store::Store> {
        self.shared.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates an object directly in the store, exactly as a POST would.
    pub fn create(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.store().create(rt, namespace, object)
    }

    pub fn get(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.store().get(rt, namespace, name)
    }

    /// Replaces an object directly in the store, exactly as a PUT would.
    pub fn update(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.put(rt, namespace, object, false)
    }

    /// Replaces an object's status, exactly as a PUT to its `/status` subresource would.
    pub fn update_status(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.put(rt, namespace, object, true)
    }

    fn put(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        object: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.store()
            .update(rt, namespace, &name, object, status_only)
    }

    pub fn delete(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.store().delete(rt, namespace, name, None)
    }

    pub fn resource_version(&self) -> u64 {
        self.store().current_rv()
    }

    /// Drops all retained history, so watches and continues from any earlier version get 410.
    pub fn compact(&self) {
        self.store().compact()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<http::Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = &mut stopped => return,
        };
        let Ok((tcp, _)) = conn else { continue };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| http::handle(shared.clone(), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn write_kubeconfig(
    path: &Path,
    addr: SocketAddr,
    ca_pem: &str,
    token: &str,
) -> Result<(), FixtureError> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\nusers:\n- name: fixture\n  user:\n    token: {token}\ncontexts:\n- name: fixture\n  context:\n    cluster: fixture\n    user: fixture\n    namespace: default\ncurrent-context: fixture\n"
    );
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests;
