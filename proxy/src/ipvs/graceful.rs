//! Graceful termination of real servers, as upstream's: a TCP real server that leaves
//! its Service gets weight 0 (no new connections) and is deleted once the kernel
//! counts no active or inactive connections on it. UDP and SCTP ones go at once
//! (expire_nodest_conn drops their flows on the next packet). Unlike upstream, a real
//! server is also deleted after `max_wait`, so a connection that never closes cannot
//! keep a dead endpoint in the table forever.

use super::kernel::{IpvsError, IpvsKernel};
use super::netlink::{RealServer, ServiceKey, VirtualServer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// IPVS' own default TCP established timeout: idle connections are gone by then.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// Whether a real server of a `protocol` service drains before deletion.
pub fn drains(protocol: u16) -> bool {
    protocol == 6
}

#[derive(Debug)]
pub struct Draining {
    max_wait: Duration,
    /// (service, real server) → (service as programmed, deadline).
    entries: BTreeMap<(ServiceKey, SocketAddr), (VirtualServer, Instant)>,
}

impl Draining {
    pub fn new(max_wait: Duration) -> Self {
        Draining {
            max_wait,
            entries: BTreeMap::new(),
        }
    }

    /// Starts draining `rs` (its weight is 0 in the kernel already).
    pub fn start(&mut self, vs: &VirtualServer, rs: SocketAddr, now: Instant) {
        self.entries
            .entry((vs.key(), rs))
            .or_insert_with(|| (vs.clone(), now + self.max_wait));
    }

    /// `rs` is wanted again (its weight goes back up) or its service is gone.
    pub fn stop(&mut self, key: &ServiceKey, rs: &SocketAddr) {
        self.entries.remove(&(*key, *rs));
    }

    pub fn forget_service(&mut self, key: &ServiceKey) {
        self.entries.retain(|(k, _), _| k != key);
    }

    /// Deletes the real servers that have drained or waited long enough; returns
    /// the deleted ones.
    pub fn reap(
        &mut self,
        ipvs: &mut dyn IpvsKernel,
        now: Instant,
    ) -> Result<Vec<(ServiceKey, SocketAddr)>, IpvsError> {
        let mut by_service: BTreeMap<ServiceKey, Vec<SocketAddr>> = BTreeMap::new();
        for (key, rs) in self.entries.keys() {
            by_service.entry(*key).or_default().push(*rs);
        }
        let mut deleted = Vec::new();
        for (key, reals) in by_service {
            let Some((vs, _)) = reals
                .first()
                .and_then(|rs| self.entries.get(&(key, *rs)))
                .cloned()
            else {
                continue;
            };
            let in_kernel = match ipvs.destinations(&vs) {
                Ok(d) => d,
                // The service itself is gone, and its real servers with it.
                Err(IpvsError::Kernel { .. }) => {
                    self.forget_service(&key);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for rs in reals {
                let Some(dest) = in_kernel
                    .iter()
                    .find(|d| SocketAddr::new(d.server.addr, d.server.port) == rs)
                else {
                    self.entries.remove(&(key, rs));
                    continue;
                };
                let deadline = self.entries.get(&(key, rs)).map(|(_, d)| *d);
                let idle = dest.active_conns + dest.inactive_conns == 0;
                if idle || deadline.is_some_and(|d| now >= d) {
                    let server = RealServer {
                        addr: rs.ip(),
                        port: rs.port(),
                        weight: 0,
                    };
                    ipvs.delete_destination(&vs, &server)?;
                    self.entries.remove(&(key, rs));
                    deleted.push((key, rs));
                }
            }
        }
        Ok(deleted)
    }
}
