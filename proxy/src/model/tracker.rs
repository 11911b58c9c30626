//! Change tracking: Services, EndpointSlices and the node's topology go in as watch
//! events; out comes the desired state per Service port and which Services changed.

use super::endpoints::{
    self, CategorizedEndpoints, Endpoint, Endpoints, NodeTopology, SERVICE_NAME_LABEL, SliceInfo,
};
use super::service::{Protocol, ServiceName, ServicePort, ServicePortName, service_ports};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Everything the backends need for one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Shared with the tracker's record of the Service.
    pub port: Arc<ServicePort>,
    /// All known endpoints for the port, sorted.
    pub endpoints: Endpoints,
    pub categorized: CategorizedEndpoints,
}

/// The whole desired state: every programmed Service port, grouped by Service.
pub type DesiredState = BTreeMap<ServiceName, Arc<Vec<ServiceEntry>>>;

/// What a sync receives: the full desired state and the Services changed since the last one.
pub struct Snapshot {
    pub state: DesiredState,
    pub changed: BTreeSet<ServiceName>,
}

/// The ports of a Service, as the proxy keeps them.
type Ports = Box<[Arc<ServicePort>]>;

fn compact_ports(svc: &Service) -> Ports {
    service_ports(svc).into_iter().map(Arc::new).collect()
}

/// The EndpointSlices of one Service, sorted by name: a Service has few, so a list
/// costs much less than a map.
#[derive(Debug, Default, PartialEq, Eq)]
struct ServiceSlices(Vec<(String, SliceInfo)>);

impl ServiceSlices {
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    fn get(&self, name: &str) -> Option<&SliceInfo> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    fn insert(&mut self, name: String, info: SliceInfo) {
        match self.position(&name) {
            Ok(i) => self.0[i].1 = info,
            Err(i) => {
                self.0.insert(i, (name, info));
                self.0.shrink_to_fit();
            }
        }
    }

    /// Whether there was a slice of that name.
    fn remove(&mut self, name: &str) -> bool {
        let found = self.position(name).map(|i| self.0.remove(i)).is_ok();
        self.0.shrink_to_fit();
        found
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &SliceInfo> {
        self.0.iter().map(|(_, info)| info)
    }
}

#[derive(Default)]
pub struct ChangeTracker {
    services: BTreeMap<ServiceName, Ports>,
    slices: BTreeMap<ServiceName, ServiceSlices>,
    node: NodeTopology,
    state: DesiredState,
    dirty: BTreeSet<ServiceName>,
    services_relist: Relist<Ports>,
    slices_relist: Relist<ServiceSlices>,
}

/// A re-list in progress of one kind of object: the new complete set so far, per
/// Service, kept in the tracker's compact form (not as API objects) meanwhile.
struct Relist<V>(Option<BTreeMap<ServiceName, V>>);

impl<V> Default for Relist<V> {
    fn default() -> Self {
        Relist(None)
    }
}

impl<V: Default + PartialEq> Relist<V> {
    fn begin(&mut self) {
        self.0 = Some(BTreeMap::new());
    }

    /// The re-listed entry of `key`, while a re-list is in progress.
    fn entry(&mut self, key: ServiceName) -> Option<&mut V> {
        self.0.as_mut().map(|fresh| fresh.entry(key).or_default())
    }

    /// The re-list is complete: it replaces `known` at once, so entries absent from it
    /// are deleted, and every Service whose entry differs is marked changed.
    fn end(&mut self, known: &mut BTreeMap<ServiceName, V>, dirty: &mut BTreeSet<ServiceName>) {
        let fresh = self.0.take().unwrap_or_default();
        for key in known.keys().chain(fresh.keys()) {
            if known.get(key) != fresh.get(key) {
                dirty.insert(key.clone());
            }
        }
        *known = fresh;
    }
}

fn service_key(svc: &Service) -> Option<ServiceName> {
    Some(ServiceName {
        namespace: svc.metadata.namespace.clone()?,
        name: svc.metadata.name.clone()?,
    })
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
        let Some(key) = service_key(svc) else {
            return;
        };
        let ports = compact_ports(svc);
        if self.services.get(&key) != Some(&ports) {
            self.services.insert(key.clone(), ports);
            self.dirty.insert(key);
        }
    }

    pub fn delete_service(&mut self, svc: &Service) {
        let Some(key) = service_key(svc) else {
            return;
        };
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
        }
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some((owner, name)) = slice_owner(slice) else {
            return;
        };
        let info = SliceInfo::from_slice(slice, &self.node.name);
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
            if slices.remove(&name) {
                self.dirty.insert(owner.clone());
            }
            if slices.is_empty() {
                self.slices.remove(&owner);
            }
        }
    }

    /// A re-list of Services starts: what follows until [`Self::end_services_relist`]
    /// is the complete set.
    pub fn begin_services_relist(&mut self) {
        self.services_relist.begin();
    }

    /// One Service of the re-list in progress.
    pub fn relist_service(&mut self, svc: &Service) {
        if let Some(ports) = service_key(svc).and_then(|key| self.services_relist.entry(key)) {
            *ports = compact_ports(svc);
        }
    }

    /// The re-list is complete: it replaces the known Services at once, so Services
    /// absent from it are deleted.
    pub fn end_services_relist(&mut self) {
        self.services_relist
            .end(&mut self.services, &mut self.dirty);
    }

    /// A re-list of EndpointSlices starts; see [`Self::begin_services_relist`].
    pub fn begin_slices_relist(&mut self) {
        self.slices_relist.begin();
    }

    /// One EndpointSlice of the re-list in progress.
    pub fn relist_slice(&mut self, slice: &EndpointSlice) {
        let Some((owner, name)) = slice_owner(slice) else {
            return;
        };
        if let Some(slices) = self.slices_relist.entry(owner) {
            slices.insert(name, SliceInfo::from_slice(slice, &self.node.name));
        }
    }

    /// The re-list is complete: it replaces the known EndpointSlices at once.
    pub fn end_slices_relist(&mut self) {
        self.slices_relist.end(&mut self.slices, &mut self.dirty);
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
        let mut entries = ports
            .iter()
            .filter(|p| !p.cluster_ips.is_empty())
            .map(|port| {
                let mut eps: Vec<Endpoint> = slices
                    .into_iter()
                    .flat_map(|s| s.values())
                    .flat_map(|slice| {
                        endpoints::slice_endpoints(slice, &port.name.port, port.name.protocol)
                    })
                    .filter(|e| {
                        port.cluster_ips
                            .iter()
                            .any(|ip| ip.is_ipv6() == e.addr.is_ipv6())
                    })
                    .collect();
                eps.sort();
                eps.dedup_by(|a, b| a.addr == b.addr);
                let eps = Endpoints::from(eps);
                let categorized = endpoints::categorize(port, &eps, &self.node);
                ServiceEntry {
                    port: Arc::clone(port),
                    endpoints: eps,
                    categorized,
                }
            })
            .collect::<Vec<_>>();
        // Kept until the Service changes: no room for more.
        entries.shrink_to_fit();
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

/// The entries of one Service in a map of programmed ports: a range of the map,
/// which sorts by namespace and name first, so a partial sync stays linear in
/// what changed.
pub fn ports_of_service<'a, V>(
    programmed: &'a BTreeMap<ServicePortName, V>,
    svc: &'a ServiceName,
) -> impl Iterator<Item = (&'a ServicePortName, &'a V)> {
    let first = ServicePortName {
        namespace: svc.namespace.clone(),
        name: svc.name.clone(),
        port: String::new(),
        protocol: Protocol::Tcp,
    };
    programmed
        .range(first..)
        .take_while(move |(k, _)| k.namespace == svc.namespace && k.name == svc.name)
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

    fn names<'a>(services: impl IntoIterator<Item = &'a ServiceName>) -> Vec<&'a str> {
        services.into_iter().map(|s| s.name.as_str()).collect()
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
        assert_eq!(names(&snap.changed), ["a"]);

        t.begin_services_relist();
        t.relist_service(&svc("b", "198.19.0.2"));
        t.end_services_relist();
        let snap = t.snapshot();
        assert!(!snap.state.contains_key(&ServiceName {
            namespace: "ns".into(),
            name: "a".into()
        }));
    }

    #[test]
    fn a_relist_takes_effect_when_complete() {
        let mut t = ChangeTracker::new("node-a");
        t.apply_service(&svc("a", "198.19.0.1"));
        t.apply_service(&svc("b", "198.19.0.2"));
        t.apply_slice(&slice("a", "a-1", &["10.0.0.1"]));
        t.apply_slice(&slice("b", "b-1", &["10.0.0.2"]));
        t.snapshot();

        t.begin_slices_relist();
        t.relist_slice(&slice("a", "a-1", &["10.0.0.1"]));
        t.relist_slice(&slice("a", "a-2", &["10.0.0.3"]));
        assert!(
            !t.has_changes(),
            "a re-list in progress changes nothing yet"
        );
        t.end_slices_relist();
        let snap = t.snapshot();
        assert_eq!(
            names(&snap.changed),
            ["a", "b"],
            "a gained an endpoint; b's slice is absent from the new list"
        );
        let endpoints = |name: &str| {
            snap.state[&ServiceName {
                namespace: "ns".into(),
                name: name.into(),
            }][0]
                .endpoints
                .iter()
                .map(|e| e.addr.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(endpoints("a"), ["10.0.0.1:8080", "10.0.0.3:8080"]);
        assert!(endpoints("b").is_empty());

        t.begin_services_relist();
        t.relist_service(&svc("a", "198.19.0.1"));
        t.end_services_relist();
        let snap = t.snapshot();
        assert_eq!(names(&snap.changed), ["b"]);
        assert_eq!(names(snap.state.keys()), ["a"]);
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
