//! Health: the proxy's own /healthz (and /livez), and the health check node ports of
//! externalTrafficPolicy Local Services, which answer 200 only while this node has
//! local endpoints, so load balancers send traffic only to such nodes.

use crate::http::{self, Handler, Reply};
use crate::model::{ServiceName, Snapshot, entries};
use hyper::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// When the proxy last programmed its rules and whether changes are waiting.
pub struct ProxyHealth {
    inner: Mutex<HealthInner>,
    /// Unhealthy when changes have waited longer than this.
    limit: Duration,
}

struct HealthInner {
    last_updated: SystemTime,
    pending_since: Option<SystemTime>,
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one field.
    let (days, rem) = (secs / 86400, secs % 86400);
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl ProxyHealth {
    pub fn new(sync_period: Duration) -> Arc<Self> {
        Arc::new(ProxyHealth {
            inner: Mutex::new(HealthInner {
                last_updated: SystemTime::now(),
                pending_since: Some(SystemTime::now()),
            }),
            limit: 2 * sync_period,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn queued(&self) {
        let mut g = self.lock();
        if g.pending_since.is_none() {
            g.pending_since = Some(SystemTime::now());
        }
    }

    pub fn updated(&self) {
        let mut g = self.lock();
        g.last_updated = SystemTime::now();
        g.pending_since = None;
    }

    pub fn healthy(&self) -> bool {
        let g = self.lock();
        g.pending_since
            .is_none_or(|p| p.elapsed().unwrap_or_default() < self.limit)
    }

    pub fn handler(self: &Arc<Self>) -> Handler {
        let health = self.clone();
        Arc::new(move |path: &str| {
            if path != "/healthz" && path != "/livez" {
                return Reply {
                    status: StatusCode::NOT_FOUND,
                    content_type: "text/plain",
                    body: "404 page not found\n".into(),
                };
            }
            let healthy = health.healthy();
            let last = health.lock().last_updated;
            let body = json!({"lastUpdated": rfc3339(last), "currentTime": rfc3339(SystemTime::now()), "nodeEligible": true});
            Reply {
                status: if healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                content_type: "application/json",
                body: body.to_string(),
            }
        })
    }
}

struct HealthCheckPort {
    service: ServiceName,
    local_endpoints: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// The listeners of Services' health check node ports.
#[derive(Default)]
pub struct ServiceHealthServer {
    ports: BTreeMap<u16, HealthCheckPort>,
    bind: Option<IpAddr>,
}

impl ServiceHealthServer {
    pub fn new(bind: Option<IpAddr>) -> Self {
        ServiceHealthServer {
            ports: BTreeMap::new(),
            bind,
        }
    }

    /// Opens, updates and closes listeners to match the Services in `snapshot`.
    pub async fn update(&mut self, snapshot: &Snapshot) {
        let mut wanted: BTreeMap<u16, (ServiceName, usize)> = BTreeMap::new();
        for e in entries(&snapshot.state).filter(|e| e.port.health_check_node_port != 0) {
            let slot = wanted
                .entry(e.port.health_check_node_port)
                .or_insert((e.port.service_name(), 0));
            slot.1 = slot.1.max(e.categorized.local.len());
        }
        self.ports.retain(|port, hc| {
            let keep = wanted.get(port).is_some_and(|(svc, _)| *svc == hc.service);
            if !keep {
                hc.task.abort();
            }
            keep
        });
        for (port, (service, count)) in wanted {
            if let Some(hc) = self.ports.get(&port) {
                hc.local_endpoints.store(count, Ordering::Relaxed);
                continue;
            }
            let local_endpoints = Arc::new(AtomicUsize::new(count));
            let addr =
                SocketAddr::new(self.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port);
            match http::serve(
                addr,
                Self::handler(service.clone(), local_endpoints.clone()),
            )
            .await
            {
                Ok(task) => {
                    self.ports.insert(
                        port,
                        HealthCheckPort {
                            service,
                            local_endpoints,
                            task,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(%service, port, error = %e, "cannot open health check node port")
                }
            }
        }
    }

    fn handler(service: ServiceName, local: Arc<AtomicUsize>) -> Handler {
        Arc::new(move |_path: &str| {
            let n = local.load(Ordering::Relaxed);
            let body = json!({"service": {"namespace": service.namespace, "name": service.name}, "localEndpoints": n, "serviceProxyHealthy": true});
            Reply {
                status: if n > 0 {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                content_type: "application/json",
                body: body.to_string(),
            }
        })
    }
}

impl Drop for ServiceHealthServer {
    fn drop(&mut self) {
        for hc in self.ports.values() {
            hc.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(super::rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
