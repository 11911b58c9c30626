//! The gRPC side of berth-cri: RuntimeService and ImageService over the
//! daemon's shared stores, served on a unix socket.

mod checkpoint;
mod container;
mod daemon;
mod events;
mod exec;
mod image;
mod metrics;
mod phases;
mod pod_resources;
mod runtime;
mod sandbox;
mod stats;
mod status;
mod streaming;
mod supervision;

use std::future::Future;
use std::sync::Arc;

pub use daemon::Daemon;
pub use image::ImageServer;
pub use runtime::{RUNTIME_API_VERSION, RUNTIME_NAME, RuntimeServer};

use crate::config::Config;

/// Opens the stores and serves both services on `config.listen` until
/// `shutdown` completes.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    use anyhow::Context;
    for dir in [&config.root, &config.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Some(dir) = config.listen.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listen = config.listen.clone();
    let daemon = Arc::new(Daemon::open(config)?);
    tokio::spawn(daemon.clone().watch_exits());
    streaming::start(&daemon).await?;
    let router = tonic::transport::Server::builder()
        .add_service(berth_proto::runtime_server(RuntimeServer::new(
            daemon.clone(),
        )))
        .add_service(berth_proto::image_server(ImageServer::new(
            daemon.images.clone(),
        )));
    tracing::info!(socket = %listen.display(), "serving CRI");
    berth_proto::serve_unix(router, &listen, shutdown)
        .await
        .with_context(|| format!("serving on {}", listen.display()))
}
