//! Change tracking: Services, EndpointSlices and the node's topology go in as watch
//! events; out comes the desired state per Service port and which Services changed.

use super::endpoints::{
    self, CategorizedEndpoints, Endpoint, NodeTopology, SERVICE_NAME_LABEL, SliceInfo,
};
use super::service::{ServiceName, ServicePort, ServicePortName, service_ports};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Everything the backends need for one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub port: ServicePort,
    /// All known endpoints for the port, sorted.
    pub endpoints: Vec<Endpoint>,
    pub categorized: CategorizedEndpoints,
}

/// The whole desired state: every programmed Service port, grouped by Service.
pub type DesiredState = BTreeMap<ServiceName, Arc<Vec<ServiceEntry>>>;

/// What a sync receives: the full desired state and the Services changed since the last one.
pub struct Snapshot {
    pub state: DesiredState,
    pub changed: BTreeSet<ServiceName>,
}

#[derive(Default)]
pub struct ChangeTracker {
    services: BTreeMap<ServiceName, Vec<ServicePort>>,
    slices: BTreeMap<ServiceName, BTreeMap<String, SliceInfo>>,
    node: NodeTopology,
    state: DesiredState,
    dirty: BTreeSet<ServiceName>,
}

fn slice_owner(slice: &EndpointSlice) -> Option<(ServiceName, String)> {
    let namespace = slice.metadata.namespace.clone()?;
    let name = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    Some((
        ServiceName { namespace, name },
        slice.metadata.name.clone()?,
    ))
}

impl ChangeTracker {
    pub fn new(node_name: &str) -> Self {
        ChangeTracker {
            node: NodeTopology {
                name: node_name.to_string(),
                zone: None,
            },
            ..Default::default()
        }
    }

    pub fn node(&self) -> &NodeTopology {
        &self.node
    }

    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn apply_service(&mut self, svc: &Service) {
        let (Some(namespace), Some(name)) =
            (svc.metadata.namespace.clone(), svc.metadata.name.clone())
        else {
            return;
        };
        let key = ServiceName { namespace, name };
        let ports = service_ports(svc);
        if self.services.get(&key) != Some(&ports) {
            self.services.insert(key.clone(), ports);
            self.dirty.insert(key);
        }
    }

    pub fn delete_service(&mut self, svc: &Service) {
        let (Some(namespace), Some(name)) =
            (svc.metadata.namespace.clone(), svc.metadata.name.clone())
        else {
            return;
        };
        let key = ServiceName { namespace, name };
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
        }
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some((owner, name)) = slice_owner(slice) else {
            return;
        };
        let info = SliceInfo::from_slice(slice);
        let slices = self.slices.entry(owner.clone()).or_default();
        if slices.get(&name) != Some(&info) {
            slices.insert(name, info);
            self.dirty.insert(owner);
        }
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        let Some((owner, name)) = slice_owner(slice) else {
            return;
        };
        if let Some(slices) = self.slices.get_mut(&owner) {
            if slices.remove(&name).is_some() {
                self.dirty.insert(owner.clone());
            }
            if slices.is_empty() {
                self.slices.remove(&owner);
            }
        }
    }

    /// Replaces the whole set of Services (after a watcher re-list).
    pub fn replace_services(&mut self, all: &[Service]) {
        let old: BTreeSet<ServiceName> = self.services.keys().cloned().collect();
        let mut seen = BTreeSet::new();
        for s in all {
            self.apply_service(s);
            if let (Some(namespace), Some(name)) =
                (s.metadata.namespace.clone(), s.metadata.name.clone())
            {
                seen.insert(ServiceName { namespace, name });
            }
        }
        for gone in old.difference(&seen) {
            self.services.remove(gone);
            self.dirty.insert(gone.clone());
        }
    }

    /// Replaces the whole set of EndpointSlices (after a watcher re-list).
    pub fn replace_slices(&mut self, all: &[EndpointSlice]) {
        let mut fresh: BTreeMap<ServiceName, BTreeMap<String, SliceInfo>> = BTreeMap::new();
        for s in all {
            if let Some((owner, name)) = slice_owner(s) {
                fresh
                    .entry(owner)
                    .or_default()
                    .insert(name, SliceInfo::from_slice(s));
            }
        }
        let owners: BTreeSet<ServiceName> =
            fresh.keys().chain(self.slices.keys()).cloned().collect();
        for owner in owners {
            if fresh.get(&owner) != self.slices.get(&owner) {
                self.dirty.insert(owner);
            }
        }
        self.slices = fresh;
    }

    /// The node's zone decides topology filtering for every Service.
    pub fn set_node_zone(&mut self, zone: Option<String>) {
        if self.node.zone != zone {
            self.node.zone = zone;
            self.dirty.extend(self.services.keys().cloned());
        }
    }

    /// Marks every Service changed, so that the next snapshot rebuilds all of them.
    pub fn mark_all_changed(&mut self) {
        self.dirty.extend(self.services.keys().cloned());
    }

    fn build(&self, svc: &ServiceName) -> Option<Vec<ServiceEntry>> {
        let ports = self.services.get(svc)?;
        let slices = self.slices.get(svc);
        let entries = ports
            .iter()
            .filter(|p| !p.cluster_ips.is_empty())
            .map(|port| {
                let mut eps: Vec<Endpoint> = slices
                    .into_iter()
                    .flat_map(|s| s.values())
                    .flat_map(|slice| {
                        endpoints::slice_endpoints(
                            slice,
                            &port.name.port,
                            port.name.protocol,
                            &self.node.name,
                        )
                    })
                    .filter(|e| {
                        port.cluster_ips
                            .iter()
                            .any(|ip| ip.is_ipv6() == e.addr.is_ipv6())
                    })
                    .collect();
                eps.sort();
                eps.dedup_by(|a, b| a.addr == b.addr);
                let categorized = endpoints::categorize(port, &eps, &self.node);
                ServiceEntry {
                    port: port.clone(),
                    endpoints: eps,
                    categorized,
                }
            })
            .collect();
        Some(entries)
    }

    /// Rebuilds what changed and hands out the full state with the changed Services.
    pub fn snapshot(&mut self) -> Snapshot {
        let changed = std::mem::take(&mut self.dirty);
        for svc in &changed {
            match self.build(svc) {
                Some(entries) => {
                    self.state.insert(svc.clone(), Arc::new(entries));
                }
                None => {
                    self.state.remove(svc);
                }
            }
        }
        Snapshot {
            state: self.state.clone(),
            changed,
        }
    }
}

/// Every entry of the state in a stable order.
pub fn entries(state: &DesiredState) -> impl Iterator<Item = &ServiceEntry> {
    state.values().flat_map(|v| v.iter())
}

/// Port names of one Service in the state.
pub fn port_names(state: &DesiredState, svc: &ServiceName) -> Vec<ServicePortName> {
    state
        .get(svc)
        .map(|v| v.iter().map(|e| e.port.name.clone()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))
        .unwrap()
    }

    fn slice(svc: &str, name: &str, ips: &[&str]) -> EndpointSlice {
        let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"})).collect();
        serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name, "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
        .unwrap()
    }

    #[test]
    fn changes_are_tracked_per_service() {
        let mut t = ChangeTracker::new("node-a");
        t.apply_service(&svc("a", "198.19.0.1"));
        t.apply_service(&svc("b", "198.19.0.2"));
        t.apply_slice(&slice("a", "a-1", &["10.0.0.1"]));
        t.apply_slice(&slice("a", "a-2", &["10.0.0.2"]));
        let snap = t.snapshot();
        assert_eq!(snap.changed.len(), 2);
        let a = &snap.state[&ServiceName {
            namespace: "ns".into(),
            name: "a".into(),
        }][0];
        assert_eq!(a.categorized.cluster.len(), 2);
        assert!(a.categorized.local.iter().all(|e| e.local));

        t.apply_slice(&slice("a", "a-2", &["10.0.0.2"]));
        assert!(!t.has_changes(), "an identical slice is no change");
        t.delete_slice(&slice("a", "a-1", &[]));
        let snap = t.snapshot();
        assert_eq!(
            snap.changed
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );

        t.replace_services(&[svc("b", "198.19.0.2")]);
        let snap = t.snapshot();
        assert!(!snap.state.contains_key(&ServiceName {
            namespace: "ns".into(),
            name: "a".into()
        }));
    }

    #[test]
    fn headless_and_external_name_services_are_skipped() {
        let mut t = ChangeTracker::new("n");
        t.apply_service(&svc("headless", "None"));
        let ext: Service = serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.org"}})).unwrap();
        t.apply_service(&ext);
        let snap = t.snapshot();
        assert!(snap.state.values().all(|v| v.is_empty()));
    }
}
