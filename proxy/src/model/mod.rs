//! The proxy's model of the cluster: Services and EndpointSlices turned into the
//! desired state of each Service port, with per-Service change tracking.

mod endpoints;
mod service;
mod tracker;

pub use endpoints::{
    CategorizedEndpoints, Endpoint, Endpoints, NodeTopology, SERVICE_NAME_LABEL, TopologyHints,
};
pub use service::{Protocol, ServiceName, ServicePort, ServicePortName, TrafficDistribution};
pub use tracker::{
    ChangeTracker, DesiredState, ServiceEntry, Snapshot, entries, port_names, ports_of_service,
};
