//! berth-proxy: kube-proxy compatible Service proxy.

use berth_proxy::config::{Flags, ProxyConfig};
use clap::Parser;

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init()
    } else {
        builder.init()
    }
}

fn main() -> anyhow::Result<()> {
    berth_proxy::memory::limit_arenas();
    let flags = Flags::parse();
    init_logging(&flags.logging_format);
    let cfg = ProxyConfig::resolve(&flags)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if cfg.cleanup {
            berth_proxy::run::cleanup_all(&cfg)?;
            return Ok(());
        }
        let client = berth_proxy::run::client(&cfg).await?;
        tracing::info!(mode = ?cfg.mode, node = %cfg.hostname, "starting berth-proxy");
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        berth_proxy::run::run(cfg, client, shutdown).await?;
        Ok(())
    })
}
