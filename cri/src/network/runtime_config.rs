//! Per-pod runtime settings passed to plugins as `runtimeConfig`, only for
//! the capabilities a plugin declares (CNI CONVENTIONS.md), and their
//! conversion from CRI types the way containerd does it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_proto::runtime::v1 as cri;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::CniError;
use super::quantity::parse_quantity;

/// Capability arguments for one pod. Absent (`None`/empty) entries are not
/// sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConfig {
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
    pub dns: Option<DnsCapability>,
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub ip_ranges: Vec<Vec<IpRange>>,
    pub cgroup_path: Option<String>,
    /// The pod's annotations, offered by containerd to plugins declaring
    /// `io.kubernetes.cri.pod-annotations`.
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

/// containerd's capability name for the pod annotations.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: String,
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// Rates in bits per second, bursts in bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(skip_serializing_if = "is_zero")]
    pub ingress_rate: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub ingress_burst: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub egress_rate: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub egress_burst: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DnsCapability {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    pub subnet: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub range_start: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub range_end: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

impl RuntimeConfig {
    /// The capability arguments containerd derives from a sandbox config:
    /// port mappings with a host port, bandwidth from the annotations, DNS,
    /// the cgroup parent and the annotations themselves.
    pub fn from_sandbox_config(config: &cri::PodSandboxConfig) -> Result<Self, CniError> {
        Ok(RuntimeConfig {
            port_mappings: port_mappings_from_cri(&config.port_mappings),
            bandwidth: bandwidth_from_annotations(&config.annotations)?,
            dns: config.dns_config.as_ref().map(dns_from_cri),
            cgroup_path: config
                .linux
                .as_ref()
                .map(|l| l.cgroup_parent.clone())
                .filter(|p| !p.is_empty()),
            pod_annotations: Some(
                config
                    .annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            ..RuntimeConfig::default()
        })
    }

    /// Every capability argument this pod has, keyed by capability name.
    pub fn capability_args(&self) -> Map<String, Value> {
        let mut args = Map::new();
        let mut put = |key: &str, value: Value| {
            args.insert(key.to_string(), value);
        };
        if !self.port_mappings.is_empty() {
            put("portMappings", to_value(&self.port_mappings));
        }
        if let Some(b) = &self.bandwidth {
            put("bandwidth", to_value(b));
        }
        if let Some(d) = &self.dns {
            put("dns", to_value(d));
        }
        if !self.ips.is_empty() {
            put("ips", to_value(&self.ips));
        }
        if let Some(mac) = &self.mac {
            put("mac", Value::String(mac.clone()));
        }
        if !self.ip_ranges.is_empty() {
            put("ipRanges", to_value(&self.ip_ranges));
        }
        if let Some(path) = &self.cgroup_path {
            put("cgroupPath", Value::String(path.clone()));
        }
        if let Some(annotations) = &self.pod_annotations {
            put(POD_ANNOTATIONS_CAPABILITY, to_value(annotations));
        }
        args
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    // Serializing these plain structs cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The `runtimeConfig` object for a plugin: the pod's capability arguments
/// restricted to those the plugin declared. `None` when nothing matches,
/// so the key is left out like libcni does.
pub fn runtime_config_for(
    args: &Map<String, Value>,
    declared: &BTreeSet<String>,
) -> Option<Map<String, Value>> {
    let selected: Map<String, Value> = args
        .iter()
        .filter(|(k, _)| declared.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!selected.is_empty()).then_some(selected)
}

/// CRI port mappings to CNI ones: entries without a host port are skipped
/// and the protocol is lowercased, as containerd does.
pub fn port_mappings_from_cri(mappings: &[cri::PortMapping]) -> Vec<PortMapping> {
    mappings
        .iter()
        .filter(|m| m.host_port > 0)
        .map(|m| PortMapping {
            host_port: m.host_port,
            container_port: m.container_port,
            protocol: cri::Protocol::try_from(m.protocol)
                .unwrap_or(cri::Protocol::Tcp)
                .as_str_name()
                .to_lowercase(),
            host_ip: m.host_ip.clone(),
        })
        .collect()
}

/// CRI DNS settings to the `dns` capability.
pub fn dns_from_cri(dns: &cri::DnsConfig) -> DnsCapability {
    DnsCapability {
        servers: dns.servers.clone(),
        searches: dns.searches.clone(),
        options: dns.options.clone(),
    }
}

pub const INGRESS_BANDWIDTH_ANNOTATION: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_BANDWIDTH_ANNOTATION: &str = "kubernetes.io/egress-bandwidth";

/// The bandwidth capability from the pod's `kubernetes.io/{ingress,egress}-bandwidth`
/// annotations, like containerd: rates from the quantities, bursts unlimited
/// (u32::MAX). `None` when neither annotation is set.
pub fn bandwidth_from_annotations(
    annotations: &HashMap<String, String>,
) -> Result<Option<Bandwidth>, CniError> {
    let rate = |key: &str| -> Result<Option<u64>, CniError> {
        let Some(text) = annotations.get(key) else {
            return Ok(None);
        };
        let invalid = |reason: String| CniError::InvalidArgument {
            field: format!("annotation {key}"),
            reason,
        };
        let bits = parse_quantity(text).map_err(invalid)?;
        // Kubernetes' limits for these annotations.
        if bits < 1_000 {
            return Err(invalid(format!("{text:?} is unreasonably small (< 1kbit)")));
        }
        if bits > 1_000_000_000_000_000 {
            return Err(invalid(format!("{text:?} is unreasonably large (> 1Pbit)")));
        }
        Ok(Some(bits))
    };
    let ingress = rate(INGRESS_BANDWIDTH_ANNOTATION)?;
    let egress = rate(EGRESS_BANDWIDTH_ANNOTATION)?;
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    let burst = |r: Option<u64>| r.map_or(0, |_| u64::from(u32::MAX));
    Ok(Some(Bandwidth {
        ingress_rate: ingress.unwrap_or(0),
        ingress_burst: burst(ingress),
        egress_rate: egress.unwrap_or(0),
        egress_burst: burst(egress),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_like_containerd() {
        let cri_ports = vec![
            cri::PortMapping {
                protocol: cri::Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            },
            cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 80,
                host_port: 0,
                host_ip: String::new(),
            },
            cri::PortMapping {
                protocol: cri::Protocol::Sctp as i32,
                container_port: 9,
                host_port: 9000,
                host_ip: String::new(),
            },
        ];
        let ports = port_mappings_from_cri(&cri_ports);
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].protocol, "udp");
        assert_eq!(ports[1].protocol, "sctp");
        let json = serde_json::to_value(&ports).unwrap();
        assert_eq!(json[0]["hostIP"], "127.0.0.1");
        assert!(json[1].get("hostIP").is_none());
    }

    #[test]
    fn bandwidth_from_pod_annotations() {
        let mut a = HashMap::new();
        assert_eq!(bandwidth_from_annotations(&a).unwrap(), None);
        a.insert(INGRESS_BANDWIDTH_ANNOTATION.to_string(), "10M".to_string());
        let b = bandwidth_from_annotations(&a).unwrap().unwrap();
        assert_eq!(b.ingress_rate, 10_000_000);
        assert_eq!(b.ingress_burst, u64::from(u32::MAX));
        assert_eq!(b.egress_rate, 0);
        a.insert(EGRESS_BANDWIDTH_ANNOTATION.to_string(), "10".to_string());
        let err = bandwidth_from_annotations(&a).unwrap_err().to_string();
        assert!(
            err.contains(EGRESS_BANDWIDTH_ANNOTATION) && err.contains("small"),
            "{err}"
        );
    }

    #[test]
    fn from_sandbox_config_like_containerd() {
        let config = cri::PodSandboxConfig {
            port_mappings: vec![cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 80,
                host_port: 8080,
                host_ip: String::new(),
            }],
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec![],
                options: vec![],
            }),
            annotations: HashMap::from([(
                EGRESS_BANDWIDTH_ANNOTATION.to_string(),
                "2M".to_string(),
            )]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/besteffort/pod1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rc = RuntimeConfig::from_sandbox_config(&config).unwrap();
        let args = rc.capability_args();
        assert_eq!(args["portMappings"][0]["containerPort"], 80);
        assert_eq!(args["bandwidth"]["egressRate"], 2_000_000);
        assert!(args["bandwidth"].get("ingressRate").is_none());
        assert_eq!(args["dns"]["servers"][0], "10.96.0.10");
        assert_eq!(args["cgroupPath"], "/kubepods/besteffort/pod1");
        assert_eq!(
            args[POD_ANNOTATIONS_CAPABILITY][EGRESS_BANDWIDTH_ANNOTATION],
            "2M"
        );

        let bare = RuntimeConfig::from_sandbox_config(&cri::PodSandboxConfig::default()).unwrap();
        let args = bare.capability_args();
        assert_eq!(
            args.keys().collect::<Vec<_>>(),
            vec![POD_ANNOTATIONS_CAPABILITY]
        );
    }

    #[test]
    fn only_declared_capabilities_are_passed() {
        let rc = RuntimeConfig {
            dns: Some(DnsCapability {
                servers: vec!["10.0.0.10".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let args = rc.capability_args();
        let declared = BTreeSet::from(["dns".to_string(), "bandwidth".to_string()]);
        let selected = runtime_config_for(&args, &declared).unwrap();
        assert_eq!(selected.keys().collect::<Vec<_>>(), vec!["dns"]);
        assert!(runtime_config_for(&args, &BTreeSet::new()).is_none());
    }
}
