//! The proxy's main loop: watch Services, EndpointSlices and the own Node, coalesce
//! changes, and sync the backend no more often than minSyncPeriod and at least every
//! syncPeriod; see [`SyncSchedule`] for when a sync rewrites everything.

use crate::backend::Backend;
use crate::config::{LocalDetector, Mode, ProxyConfig};
use crate::healthcheck::{ProxyHealth, ServiceHealthServer};
use crate::metrics::Metrics;
use crate::model::{ChangeTracker, DesiredState};
use crate::{conntrack, http, iptables, ipvs};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("building the Kubernetes client: {0}")]
    Client(String),
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Backend(String),
}

/// Services the proxy handles: not headless, not claimed by another service proxy.
pub const SERVICE_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

enum Change {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Node(Box<watcher::Event<Node>>),
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<Change, watcher::Error>> + Send>>;

fn watch_streams(client: &kube::Client, node_name: &str) -> ChangeStream {
    let cfg = watcher::Config::default().labels(SERVICE_LABEL_SELECTOR);
    let services = watcher(Api::<Service>::all(client.clone()), cfg.clone())
        .default_backoff()
        .map(|e| e.map(|s| Change::Service(Box::new(s))));
    let slices = watcher(Api::<EndpointSlice>::all(client.clone()), cfg)
        .default_backoff()
        .map(|e| e.map(|s| Change::Slice(Box::new(s))));
    let node_cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let nodes = watcher(Api::<Node>::all(client.clone()), node_cfg)
        .default_backoff()
        .map(|e| e.map(|n| Change::Node(Box::new(n))));
    Box::pin(futures::stream::select_all([
        services.boxed(),
        slices.boxed(),
        nodes.boxed(),
    ]))
}

/// Node facts the proxy acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub ips: Vec<IpAddr>,
    pub zone: Option<String>,
    pub pod_cidrs: Vec<String>,
}

pub fn node_facts(node: &Node) -> NodeFacts {
    let mut ips: Vec<IpAddr> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ips.dedup();
    let labels = node.metadata.labels.as_ref();
    let zone = labels
        .and_then(|l| l.get("topology.kubernetes.io/zone"))
        .cloned();
    let spec = node.spec.as_ref();
    let pod_cidrs = spec
        .and_then(|s| s.pod_cidrs.clone())
        .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
        .unwrap_or_default();
    NodeFacts {
        ips,
        zone,
        pod_cidrs,
    }
}

/// The backend for the configured mode, for the IP families the node has.
pub fn build_backend(cfg: &ProxyConfig, node: &NodeFacts) -> Result<Box<dyn Backend>, RunError> {
    let mut families: Vec<bool> = Vec::new();
    if node.ips.is_empty() || node.ips.iter().any(IpAddr::is_ipv4) {
        families.push(false);
    }
    if node.ips.iter().any(IpAddr::is_ipv6) {
        families.push(true);
    }
    let local = if cfg.detect_local_from_node {
        LocalDetector::Cidrs(
            node.pod_cidrs
                .iter()
                .filter_map(|c| crate::net::Cidr::parse(c).ok())
                .collect(),
        )
    } else {
        cfg.detect_local.clone()
    };
    match cfg.mode {
        Mode::Iptables => {
            let options = iptables::IptablesOptions {
                families,
                masquerade_all: cfg.masquerade_all,
                masquerade_bit: cfg.masquerade_bit,
                local,
                node_port_addresses: cfg.node_port_addresses.clone(),
                localhost_node_ports: cfg.localhost_node_ports,
            };
            Ok(Box::new(iptables::IptablesProxier::new(
                iptables::SystemNetfilter::default(),
                options,
            )))
        }
        Mode::Nftables => {
            let options = crate::nftables::NftOptions {
                families,
                masquerade_all: cfg.masquerade_all,
                masquerade_bit: cfg.masquerade_bit,
                local,
                node_port_addresses: cfg.node_port_addresses.clone(),
            };
            Ok(Box::new(crate::nftables::NftProxier::new(
                crate::nftables::SystemNft,
                options,
            )))
        }
        Mode::Ipvs => {
            let kernel = ipvs::open_kernel(&cfg.ipvs.scheduler).map_err(ipvs_unusable)?;
            let options = ipvs::IpvsOptions {
                families,
                scheduler: cfg.ipvs.scheduler.clone(),
                masquerade_all: cfg.masquerade_all,
                masquerade_bit: cfg.masquerade_bit,
                local,
                node_port_addresses: cfg.node_port_addresses.clone(),
                strict_arp: cfg.ipvs.strict_arp,
                timeouts: ipvs::Timeouts {
                    tcp: cfg.ipvs.tcp_timeout,
                    tcp_fin: cfg.ipvs.tcp_fin_timeout,
                    udp: cfg.ipvs.udp_timeout,
                },
                exclude_cidrs: cfg.ipvs.exclude_cidrs.clone(),
                drain_max_wait: ipvs::graceful::DEFAULT_MAX_WAIT,
            };
            let proxier =
                ipvs::IpvsProxier::new(kernel, iptables::SystemNetfilter::default(), options)
                    .map_err(|e| RunError::Backend(e.to_string()))?;
            Ok(Box::new(proxier))
        }
    }
}

/// Upstream's wording when IPVS mode cannot run.
fn ipvs_unusable(e: ipvs::IpvsError) -> RunError {
    RunError::Backend(format!("can't use the IPVS proxier: {e}"))
}

/// `--cleanup`: removes what every mode may have programmed (both families), as
/// upstream does, so switching modes or uninstalling leaves nothing behind.
pub fn cleanup_all(cfg: &ProxyConfig) -> Result<(), RunError> {
    let both = NodeFacts {
        ips: vec![IpAddr::from([0, 0, 0, 0]), IpAddr::from([0u16; 8])],
        ..Default::default()
    };
    for mode in [Mode::Iptables, Mode::Nftables] {
        let cfg = ProxyConfig {
            mode,
            ..cfg.clone()
        };
        build_backend(&cfg, &both)?
            .cleanup()
            .map_err(|e| RunError::Backend(e.to_string()))?;
    }
    ipvs::cleanup_system().map_err(|e| RunError::Backend(e.to_string()))
}

/// Sets nf_conntrack_max as upstream does, unless maxPerCore is 0. Failing to write it
/// (e.g. from a network namespace) is logged, not fatal.
fn tune_conntrack(cfg: &ProxyConfig) {
    if cfg.conntrack_max_per_core <= 0 {
        return;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    let max = (cfg.conntrack_max_per_core as i64 * cores).max(cfg.conntrack_min as i64);
    if let Err(e) = std::fs::write("/proc/sys/net/netfilter/nf_conntrack_max", max.to_string()) {
        tracing::warn!(max, error = %e, "cannot set nf_conntrack_max");
    }
}

/// How often a sync rewrites every rule even though nothing asked for it, as upstream's
/// iptables and nftables proxiers do: a safety net against drift the tamper check misses.
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(60 * 60);

/// When the loop syncs without pending changes, and whether a sync is full.
///
/// As upstream (KEP-3453): the syncPeriod timer only does a partial sync (re-declaring
/// just what changed), which at 10k Services is milliseconds instead of minutes. A full
/// rewrite happens at startup, after a failed sync, after tampering was detected, and
/// otherwise once per `full_sync_period`. Node address changes make the backend itself
/// do a full sync (see `Backend::set_node_ips`).
#[derive(Debug)]
struct SyncSchedule {
    sync_period: Duration,
    full_sync_period: Duration,
    /// The next timer-driven sync: `sync_period` after the last sync started.
    next_periodic: Instant,
    next_full: Instant,
    force_full: bool,
}

impl SyncSchedule {
    fn new(now: Instant, sync_period: Duration, full_sync_period: Duration) -> Self {
        SyncSchedule {
            sync_period,
            full_sync_period,
            next_periodic: now + sync_period,
            next_full: now + full_sync_period,
            force_full: true,
        }
    }

    /// Whether a sync is wanted now regardless of the timers.
    fn forced(&self) -> bool {
        self.force_full
    }

    /// When the timer wants a sync if no change does before.
    fn periodic_due(&self) -> Instant {
        self.next_periodic
    }

    /// A sync starts at `now`; returns whether it is to be full.
    fn start(&mut self, now: Instant) -> bool {
        self.next_periodic = now + self.sync_period;
        self.force_full || now >= self.next_full
    }

    /// The sync that started at `started` succeeded; `full` is what the backend did
    /// (it may have gone full on its own, e.g. after the node's addresses changed).
    fn succeeded(&mut self, started: Instant, full: bool) {
        self.force_full = false;
        if full {
            self.next_full = started + self.full_sync_period;
        }
    }

    /// The last sync failed or the rules were changed from outside: the next is full.
    fn force_full(&mut self) {
        self.force_full = true;
    }
}

/// The backend, or the sync that has it on a blocking thread.
enum BackendSlot {
    /// Not built yet (waiting for the initial lists), or being moved.
    Missing,
    Idle(Box<dyn Backend>),
    Syncing(tokio::task::JoinHandle<SyncDone>),
}

/// A finished sync, handing the backend back.
struct SyncDone {
    backend: Box<dyn Backend>,
    snapshot: crate::model::Snapshot,
    result: Result<crate::backend::SyncReport, crate::backend::SyncError>,
    took: Duration,
}

/// Runs until the watch streams end (they do not, normally) or `shutdown` resolves.
pub async fn run(
    cfg: ProxyConfig,
    client: kube::Client,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    if cfg.mode == Mode::Ipvs {
        // Fail at start, as upstream, rather than after the first lists arrive.
        ipvs::open_kernel(&cfg.ipvs.scheduler).map_err(ipvs_unusable)?;
    }
    tune_conntrack(&cfg);
    let health = ProxyHealth::new(cfg.sync_period);
    let metrics = Arc::new(Metrics::default());
    let mut servers = Vec::new();
    if let Some(addr) = cfg.healthz_bind_address {
        servers.push(
            http::serve(addr, health.handler())
                .await
                .map_err(|source| RunError::Bind {
                    what: "healthz",
                    addr,
                    source,
                })?,
        );
    }
    if let Some(addr) = cfg.metrics_bind_address {
        servers.push(
            http::serve(addr, metrics.handler())
                .await
                .map_err(|source| RunError::Bind {
                    what: "metrics",
                    addr,
                    source,
                })?,
        );
    }
    let hc_bind = match &cfg.node_port_addresses {
        crate::config::NodePortAddresses::Cidrs(c)
            if c.len() == 1 && c[0].prefix == if c[0].is_ipv6() { 128 } else { 32 } =>
        {
            Some(c[0].addr)
        }
        _ => None,
    };
    let mut hc = ServiceHealthServer::new(hc_bind);
    let mut tracker = ChangeTracker::new(&cfg.hostname);
    let mut stream = watch_streams(&client, &cfg.hostname);
    tokio::pin!(shutdown);

    let mut backend = BackendSlot::Missing;
    let mut node = NodeFacts::default();
    let mut synced = (false, false, false);
    let mut last_state = DesiredState::new();
    // When the last sync started: minSyncPeriod counts from there, as upstream's does,
    // so a long sync is followed at once by the changes that came in meanwhile.
    let mut last_sync = Instant::now() - cfg.min_sync_period;
    let mut schedule = SyncSchedule::new(Instant::now(), cfg.sync_period, FULL_SYNC_PERIOD);
    // After a failed sync, wait a moment before trying again rather than spinning.
    let mut retry_at = Instant::now();
    let tamper_period = cfg
        .sync_period
        .min(Duration::from_secs(5))
        .max(Duration::from_millis(200));
    let mut tamper_check = tokio::time::interval_at(Instant::now() + tamper_period, tamper_period);
    tamper_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Without a Node object (e.g. not registered yet) the proxy still serves ClusterIPs.
    let node_grace = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(node_grace);

    loop {
        let ready = synced.0 && synced.1 && (synced.2 || node_grace.is_elapsed());
        if ready && matches!(backend, BackendSlot::Missing) {
            let mut b = build_backend(&cfg, &node)?;
            b.set_node_ips(node.ips.clone());
            backend = BackendSlot::Idle(b);
        }
        let idle = matches!(backend, BackendSlot::Idle(_));
        let wanted = if tracker.has_changes() || schedule.forced() {
            Instant::now()
        } else {
            schedule.periodic_due()
        };
        let sync_at = (last_sync + cfg.min_sync_period).max(wanted).max(retry_at);
        // Biased: a due sync goes before more events and before tamper checks, so a
        // stream of changes or slow checks cannot starve it. A sync runs on a blocking
        // thread while this loop keeps reading the watches, so events that arrive
        // during a long sync are taken in at once and go into the next one.
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(sync_at), if idle => {
                let BackendSlot::Idle(mut b) = std::mem::replace(&mut backend, BackendSlot::Missing) else { continue };
                let snapshot = tracker.snapshot();
                last_sync = Instant::now();
                let full = schedule.start(last_sync);
                backend = BackendSlot::Syncing(tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let result = b.sync(&snapshot, full);
                    let took = started.elapsed();
                    // After the timing: the trim is not part of the sync the metrics report.
                    if result.as_ref().is_ok_and(|r| r.full) {
                        crate::memory::release_free_memory();
                    }
                    SyncDone { backend: b, snapshot, result, took }
                }));
            }
            done = async {
                match &mut backend {
                    BackendSlot::Syncing(task) => task.await,
                    _ => std::future::pending().await,
                }
            } => {
                let done = done.map_err(|e| RunError::Backend(format!("sync task: {e}")))?;
                let SyncDone { backend: mut b, snapshot, result, took } = done;
                // The node's addresses may have changed while the backend was busy.
                b.set_node_ips(node.ips.clone());
                backend = BackendSlot::Idle(b);
                match result {
                    Ok(report) => {
                        tracing::info!(full = report.full, rules = report.rules, changed = snapshot.changed.len(), took_ms = took.as_millis() as u64, "synced proxy rules");
                        metrics.synced(took, report.full, report.rules);
                        health.updated();
                        if tracker.has_changes() {
                            // Changes that came in during the sync are still pending.
                            health.queued();
                        }
                        schedule.succeeded(last_sync, report.full);
                        let stale = conntrack::stale_flows(&last_state, &snapshot);
                        if !stale.is_empty() {
                            tokio::task::block_in_place(|| conntrack::clear(&stale));
                        }
                        hc.update(&snapshot).await;
                        last_state = snapshot.state;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "sync failed; retrying with a full sync");
                        metrics.failed();
                        tracker.mark_all_changed();
                        schedule.force_full();
                        retry_at = Instant::now() + cfg.min_sync_period.max(Duration::from_secs(1));
                    }
                }
            }
            _ = &mut node_grace, if !node_grace.is_elapsed() => {}
            change = stream.next() => {
                let Some(change) = change else { break };
                match change {
                    Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
                    Ok(Change::Service(ev)) => match *ev {
                        watcher::Event::Apply(s) => tracker.apply_service(&s),
                        watcher::Event::Delete(s) => tracker.delete_service(&s),
                        watcher::Event::Init => tracker.begin_services_relist(),
                        watcher::Event::InitApply(s) => tracker.relist_service(&s),
                        watcher::Event::InitDone => {
                            tracker.end_services_relist();
                            synced.0 = true;
                        }
                    },
                    Ok(Change::Slice(ev)) => match *ev {
                        watcher::Event::Apply(s) => tracker.apply_slice(&s),
                        watcher::Event::Delete(s) => tracker.delete_slice(&s),
                        watcher::Event::Init => tracker.begin_slices_relist(),
                        watcher::Event::InitApply(s) => tracker.relist_slice(&s),
                        watcher::Event::InitDone => {
                            tracker.end_slices_relist();
                            synced.1 = true;
                        }
                    },
                    Ok(Change::Node(ev)) => match *ev {
                        watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                            node = node_facts(&n);
                            tracker.set_node_zone(node.zone.clone());
                            if let BackendSlot::Idle(b) = &mut backend {
                                b.set_node_ips(node.ips.clone());
                            }
                        }
                        watcher::Event::InitDone => synced.2 = true,
                        watcher::Event::Delete(_) | watcher::Event::Init => {}
                    },
                }
                if tracker.has_changes() {
                    health.queued();
                }
            }
            // Only rules that were once in place can be tampered with.
            _ = tamper_check.tick(), if idle && !schedule.forced() => {
                if let BackendSlot::Idle(b) = &mut backend {
                    if tokio::task::block_in_place(|| b.tampered()) {
                        tracing::warn!("proxy rules were changed from outside; doing a full sync");
                        schedule.force_full();
                    }
                }
            }

        }
    }
    for s in servers {
        s.abort();
    }
    Ok(())
}

/// A client from `--kubeconfig` (or the in-cluster/default config), with `--master` applied.
pub async fn client(cfg: &ProxyConfig) -> Result<kube::Client, RunError> {
    // Built in a workspace where other crates enable rustls' aws-lc-rs backend
    // beside kube's ring, rustls cannot choose a process default by itself.
    // An Err only means a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = |e: &dyn std::fmt::Display| RunError::Client(e.to_string());
    let mut config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| RunError::Client(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => kube::Config::infer().await.map_err(|e| err(&e))?,
    };
    if let Some(master) = &cfg.master {
        config.cluster_url = master
            .parse()
            .map_err(|e| RunError::Client(format!("--master {master:?}: {e}")))?;
    }
    kube::Client::try_from(config).map_err(|e| err(&e))
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    const SYNC: Duration = Duration::from_secs(30);
    const FULL: Duration = Duration::from_secs(3600);

    /// A schedule whose startup full sync (at `t0`) succeeded.
    fn after_startup(t0: Instant) -> SyncSchedule {
        let mut s = SyncSchedule::new(t0, SYNC, FULL);
        assert!(s.forced(), "startup must sync at once");
        assert!(s.start(t0), "the startup sync must be full");
        s.succeeded(t0, true);
        s
    }

    #[test]
    fn timer_tick_is_a_partial_sync() {
        let t0 = Instant::now();
        let mut s = after_startup(t0);
        assert!(!s.forced());
        assert_eq!(s.periodic_due(), t0 + SYNC);
        let tick = s.periodic_due();
        assert!(
            !s.start(tick),
            "a syncPeriod tick must not rewrite everything"
        );
        s.succeeded(tick, false);
        assert_eq!(
            s.periodic_due(),
            tick + SYNC,
            "the timer restarts at each sync"
        );
    }

    #[test]
    fn full_sync_once_per_full_sync_period() {
        let t0 = Instant::now();
        let mut s = after_startup(t0);
        let mut now = t0;
        while now + SYNC < t0 + FULL {
            now = s.periodic_due();
            assert!(!s.start(now), "tick at {:?} went full", now - t0);
            s.succeeded(now, false);
        }
        now = s.periodic_due();
        assert!(
            s.start(now),
            "the first tick past the full sync period must be full"
        );
        s.succeeded(now, true);
        let next = s.periodic_due();
        assert!(
            !s.start(next),
            "the tick after the hourly full sync is partial again"
        );
    }

    #[test]
    fn failed_sync_makes_the_next_full_and_immediate() {
        let t0 = Instant::now();
        let mut s = after_startup(t0);
        let t1 = t0 + SYNC;
        assert!(!s.start(t1));
        s.force_full(); // the partial sync failed
        assert!(
            s.forced(),
            "a failed sync is retried without waiting for the timer"
        );
        assert!(
            s.start(t1 + Duration::from_secs(1)),
            "the retry must be full"
        );
        s.succeeded(t1 + Duration::from_secs(1), true);
        assert!(!s.forced());
        assert!(!s.start(s.periodic_due()));
    }

    #[test]
    fn tampering_makes_the_next_sync_full() {
        let t0 = Instant::now();
        let mut s = after_startup(t0);
        s.force_full(); // the tamper check found the rules flushed
        assert!(s.forced());
        assert!(s.start(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn backend_going_full_on_its_own_postpones_the_hourly_full_sync() {
        // E.g. the node's addresses changed: the backend reports a full sync.
        let t0 = Instant::now();
        let mut s = after_startup(t0);
        let t1 = t0 + FULL - SYNC;
        assert!(!s.start(t1));
        s.succeeded(t1, true);
        assert!(!s.start(t0 + FULL), "a full sync just happened");
        assert!(s.start(t1 + FULL));
    }
}
