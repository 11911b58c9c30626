//! CNI results of every spec version (0.1.0 … 1.1.0) in one model, and
//! their conversion back to the layout of a given version (for
//! `prevResult` chaining and the cache).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::version::CniVersion;

/// A plugin's ADD result, version independent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CniResult {
    /// The version the plugin reported.
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for interfaces inside the sandbox; empty on the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// The addresses CRI reports for a pod: the primary one and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIps {
    pub ip: IpAddr,
    pub additional: Vec<IpAddr>,
}

// Wire shapes. `ips[].version` exists only before 1.0.0; legacy results
// carry `ip4`/`ip6` instead of `interfaces`/`ips`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CurrentWire {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpWire>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Deserialize)]
struct IpWire {
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct LegacyWire {
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Deserialize)]
struct LegacyIp {
    ip: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
}

impl CniResult {
    /// Parses a result; its own `cniVersion` decides the layout, falling
    /// back to `config_version` (the network's) when it has none.
    pub fn parse(bytes: &[u8], config_version: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Self::from_value(value, config_version)
    }

    pub fn from_value(value: Value, config_version: &str) -> Result<Self, String> {
        let Value::Object(map) = &value else {
            return Err("result is not a JSON object".into());
        };
        let cni_version = match map.get("cniVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => config_version.to_string(),
        };
        let version: CniVersion = if cni_version.is_empty() {
            CniVersion::V0_1_0
        } else {
            cni_version.parse()?
        };
        if version.has_current_result_layout() {
            let wire: CurrentWire = serde_json::from_value(value).map_err(|e| e.to_string())?;
            let ips = wire
                .ips
                .into_iter()
                .map(|ip| IpConfig {
                    address: ip.address,
                    gateway: ip.gateway,
                    interface: ip.interface,
                })
                .collect::<Vec<_>>();
            if let Some(bad) = ips
                .iter()
                .filter_map(|ip| ip.interface)
                .find(|&i| i >= wire.interfaces.len())
            {
                return Err(format!(
                    "ips refer to interface {bad}, which does not exist"
                ));
            }
            Ok(CniResult {
                cni_version,
                interfaces: wire.interfaces,
                ips,
                routes: wire.routes,
                dns: wire.dns,
            })
        } else {
            let wire: LegacyWire = serde_json::from_value(value).map_err(|e| e.to_string())?;
            let mut result = CniResult {
                cni_version,
                dns: wire.dns,
                ..CniResult::default()
            };
            for ip in [wire.ip4, wire.ip6].into_iter().flatten() {
                result.ips.push(IpConfig {
                    address: ip.ip,
                    gateway: ip.gateway,
                    interface: None,
                });
                result.routes.extend(ip.routes);
            }
            Ok(result)
        }
    }

    /// The result in the layout of `version` (a `cniVersion` string).
    pub fn to_value(&self, version: &str) -> Value {
        let parsed: CniVersion = version.parse().unwrap_or(CniVersion::V0_1_0);
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::String(version.to_string()));
        if parsed.has_current_result_layout() {
            if !self.interfaces.is_empty() {
                out.insert("interfaces".into(), json!(self.interfaces));
            }
            if !self.ips.is_empty() {
                let ips = self
                    .ips
                    .iter()
                    .map(|ip| ip_to_value(ip, parsed < CniVersion::V1_0_0))
                    .collect();
                out.insert("ips".into(), Value::Array(ips));
            }
            if !self.routes.is_empty() {
                out.insert("routes".into(), json!(self.routes));
            }
        } else {
            for (key, v4) in [("ip4", true), ("ip6", false)] {
                let Some(ip) = self.ips.iter().find(|ip| ip.address.addr().is_ipv4() == v4) else {
                    continue;
                };
                let routes: Vec<&Route> = self
                    .routes
                    .iter()
                    .filter(|r| r.dst.addr().is_ipv4() == v4)
                    .collect();
                let mut legacy = Map::new();
                legacy.insert("ip".into(), json!(ip.address));
                if let Some(gw) = ip.gateway {
                    legacy.insert("gateway".into(), json!(gw));
                }
                if !routes.is_empty() {
                    legacy.insert("routes".into(), json!(routes));
                }
                out.insert(key.into(), Value::Object(legacy));
            }
        }
        if !self.dns.is_empty() {
            out.insert("dns".into(), json!(self.dns));
        }
        Value::Object(out)
    }

    /// Pod IPs as containerd picks them: the addresses of the interface
    /// named `ifname` (eth0), the first IPv4 one primary, the rest in order.
    pub fn pod_ips(&self, ifname: &str) -> Option<PodIps> {
        let mut ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|ip| {
                ip.interface
                    .and_then(|i| self.interfaces.get(i))
                    .is_some_and(|iface| iface.name == ifname)
            })
            .map(|ip| ip.address.addr())
            .collect();
        if ips.is_empty() {
            return None;
        }
        let primary = ips.iter().position(IpAddr::is_ipv4).unwrap_or(0);
        let ip = ips.remove(primary);
        Some(PodIps {
            ip,
            additional: ips,
        })
    }
}

fn ip_to_value(ip: &IpConfig, with_version: bool) -> Value {
    let mut m = Map::new();
    if with_version {
        let family = if ip.address.addr().is_ipv4() {
            "4"
        } else {
            "6"
        };
        m.insert("version".into(), Value::String(family.into()));
    }
    m.insert("address".into(), json!(ip.address));
    if let Some(gw) = ip.gateway {
        m.insert("gateway".into(), json!(gw));
    }
    if let Some(i) = ip.interface {
        m.insert("interface".into(), json!(i));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V031: &str = r#"{"cniVersion":"0.3.1",
        "interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","sandbox":"/var/run/netns/x"}],
        "ips":[{"version":"6","address":"fd00::5/64","interface":1},
               {"version":"4","address":"10.1.0.5/16","gateway":"10.1.0.1","interface":1},
               {"version":"4","address":"10.9.0.1/16","interface":0}],
        "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.1.0.10"]}}"#;

    #[test]
    fn pod_ips_are_eth0_ipv4_first() {
        let r = CniResult::parse(V031.as_bytes(), "0.3.1").unwrap();
        let ips = r.pod_ips("eth0").unwrap();
        assert_eq!(ips.ip.to_string(), "10.1.0.5");
        assert_eq!(ips.additional, vec!["fd00::5".parse::<IpAddr>().unwrap()]);
        assert!(r.pod_ips("eth1").is_none());
    }

    #[test]
    fn converts_between_layouts() {
        let r = CniResult::parse(V031.as_bytes(), "").unwrap();
        let v1 = r.to_value("1.0.0");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["ips"][1]["gateway"], "10.1.0.1");
        let v04 = r.to_value("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "6");
        let legacy = r.to_value("0.2.0");
        assert_eq!(legacy["ip4"]["ip"], "10.1.0.5/16");
        assert_eq!(legacy["ip6"]["ip"], "fd00::5/64");
        assert_eq!(CniResult::from_value(v1, "").unwrap().ips, r.ips);
    }

    #[test]
    fn parses_legacy_and_1_1_results() {
        let legacy = CniResult::parse(
            br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24","gateway":"10.0.0.1","routes":[{"dst":"0.0.0.0/0"}]}}"#,
            "",
        )
        .unwrap();
        assert_eq!(legacy.ips[0].address.to_string(), "10.0.0.2/24");
        assert_eq!(legacy.routes.len(), 1);
        let v11 = CniResult::parse(
            br#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mtu":1400,"socketPath":"/s","pciID":"0000:00:01.0"}],
                 "ips":[{"address":"10.0.0.2/24","interface":0}],"routes":[{"dst":"10.0.0.0/8","priority":5,"table":100}]}"#,
            "",
        )
        .unwrap();
        assert_eq!(v11.interfaces[0].mtu, Some(1400));
        assert_eq!(v11.routes[0].table, Some(100));
        assert_eq!(
            v11.to_value("1.1.0")["interfaces"][0]["pciID"],
            "0000:00:01.0"
        );
    }

    #[test]
    fn rejects_dangling_interface_index() {
        let err = CniResult::parse(
            br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24","interface":3}]}"#,
            "",
        )
        .unwrap_err();
        assert!(err.contains("interface 3"));
    }
}
