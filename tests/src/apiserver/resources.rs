//! The resource types the fixture serves and what the apiserver knows about each.

/// One served resource (group/version/resource), as discovery describes it.
#[derive(Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    /// Plural resource name as used in URLs.
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether `/status` exists; if so, the main resource ignores status changes and vice versa.
    pub status_subresource: bool,
    /// Whether metadata.generation is bumped on spec changes.
    pub tracks_generation: bool,
    /// Field-selector labels beyond metadata.name/metadata.namespace.
    pub extra_field_labels: &'static [&'static str],
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn group_version(&self) -> String {
        self.api_version()
    }

    /// Whether `other` is the same group/version/resource.
    pub fn same(&self, other: &ResourceType) -> bool {
        self.group == other.group
            && self.version == other.version
            && self.resource == other.resource
    }

    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (self.namespaced && field == "metadata.namespace")
            || self.extra_field_labels.contains(&field)
    }
}

pub static NAMESPACES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    resource: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    list_kind: "NamespaceList",
    namespaced: false,
    short_names: &["ns"],
    status_subresource: true,
    tracks_generation: false,
    extra_field_labels: &["status.phase"],
};

pub static SERVICES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    resource: "services",
    singular: "service",
    kind: "Service",
    list_kind: "ServiceList",
    namespaced: true,
    short_names: &["svc"],
    status_subresource: true,
    tracks_generation: false,
    extra_field_labels: &["spec.clusterIP", "spec.type"],
};

pub static NODES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    resource: "nodes",
    singular: "node",
    kind: "Node",
    list_kind: "NodeList",
    namespaced: false,
    short_names: &["no"],
    status_subresource: true,
    tracks_generation: false,
    extra_field_labels: &["spec.unschedulable"],
};

pub static ENDPOINT_SLICES: ResourceType = ResourceType {
    group: "discovery.k8s.io",
    version: "v1",
    resource: "endpointslices",
    singular: "endpointslice",
    kind: "EndpointSlice",
    list_kind: "EndpointSliceList",
    namespaced: true,
    short_names: &[],
    status_subresource: false,
    tracks_generation: true,
    extra_field_labels: &[],
};

/// Every type served, in discovery order.
pub static ALL: &[&ResourceType] = &[&NAMESPACES, &SERVICES, &NODES, &ENDPOINT_SLICES];

pub fn find(group: &str, version: &str, resource: &str) -> Option<&'static ResourceType> {
    ALL.iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.resource == resource)
}

/// Distinct API groups (the core group is "").
pub fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for r in ALL {
        if !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    groups
}
