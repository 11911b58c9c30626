//! The ADD result of every spec version (0.1.0 … 1.1.0), held in the 1.x
//! shape and converted on output to the version the network config asked
//! for (plugin output, `prevResult` chaining, the runtime's result cache).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{CniError, CniResult};
use super::version::{CURRENT_VERSION, Version};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only present in 0.3.x/0.4.0 results; derived from the address on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, rename = "advmss", skip_serializing_if = "Option::is_none")]
    pub adv_mss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            adv_mss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    /// Fields added in 1.1.0; older results cannot carry them.
    fn strip_newer_fields(&mut self) {
        self.mtu = None;
        self.adv_mss = None;
        self.priority = None;
        self.table = None;
        self.scope = None;
    }
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
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// An ADD result (also what IPAM plugins return and what arrives as
/// prevResult), in one model for every spec version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniOutput {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Always written (as `{}` when empty), as the reference plugins do.
    #[serde(default)]
    pub dns: Dns,
}

/// The `ip4`/`ip6` layout of 0.1.0 and 0.2.0 results.
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

fn decoding(e: impl std::fmt::Display) -> CniError {
    CniError::decoding("cannot decode CNI result").with_details(e)
}

impl CniOutput {
    /// Parses a result whose own `cniVersion` decides the layout, the
    /// current one when it has none.
    pub fn from_value(value: serde_json::Value) -> CniResult<Self> {
        Self::from_value_or(value, CURRENT_VERSION)
    }

    /// Parses a result of any version, 0.1.0 to 1.1.0: its own `cniVersion`
    /// decides the layout, falling back to `fallback_version` (the network's;
    /// empty means 0.1.0) when it has none. The `version` field of
    /// 0.3.x/0.4.0 IP entries is dropped (it is derived on output).
    pub fn from_value_or(value: serde_json::Value, fallback_version: &str) -> CniResult<Self> {
        let serde_json::Value::Object(map) = &value else {
            return Err(decoding("result is not a JSON object"));
        };
        let cni_version = match map.get("cniVersion").and_then(serde_json::Value::as_str) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => fallback_version.to_string(),
        };
        let version = Version::parse_or_oldest(&cni_version)?;
        let out = if version.has_current_result_layout() {
            let mut out: CniOutput = serde_json::from_value(value).map_err(decoding)?;
            out.cni_version = cni_version;
            for ip in &mut out.ips {
                ip.version = None;
            }
            out
        } else {
            let wire: LegacyWire = serde_json::from_value(value).map_err(decoding)?;
            let mut out = CniOutput {
                cni_version,
                dns: wire.dns,
                ..CniOutput::default()
            };
            for ip in [wire.ip4, wire.ip6].into_iter().flatten() {
                out.ips.push(IpConfig {
                    version: None,
                    address: ip.ip,
                    gateway: ip.gateway,
                    interface: None,
                });
                out.routes.extend(ip.routes);
            }
            out
        };
        if let Some(bad) = out
            .ips
            .iter()
            .filter_map(|ip| ip.interface)
            .find(|&i| i >= out.interfaces.len())
        {
            return Err(decoding(format!(
                "ips refer to interface {bad}, which does not exist"
            )));
        }
        Ok(out)
    }

    /// Renders the result in the layout of `version` (the config's
    /// cniVersion; empty means 0.1.0).
    pub fn to_version(&self, version: &str) -> CniResult<serde_json::Value> {
        let v = Version::parse_or_oldest(version)?;
        if !v.has_current_result_layout() {
            return Ok(self.to_legacy(version));
        }
        let mut out = self.clone();
        out.cni_version = version.to_string();
        for ip in &mut out.ips {
            ip.version = v.has_ip_version_field().then(|| {
                if ip.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                }
                .to_string()
            });
        }
        if v < Version::V1_1_0 {
            out.routes.iter_mut().for_each(Route::strip_newer_fields);
            for iface in &mut out.interfaces {
                iface.mtu = None;
                iface.socket_path.clear();
                iface.pci_id.clear();
            }
        }
        serde_json::to_value(&out).map_err(|e| CniError::internal("cannot encode result", e))
    }

    /// 0.1.0/0.2.0: the first address of each family with the routes of
    /// that family; interfaces cannot be expressed.
    fn to_legacy(&self, version: &str) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        out.insert("cniVersion".into(), json!(version));
        for (key, v4) in [("ip4", true), ("ip6", false)] {
            let Some(ip) = self.ips.iter().find(|ip| ip.address.addr().is_ipv4() == v4) else {
                continue;
            };
            let mut legacy = json!({ "ip": ip.address });
            if let Some(gw) = ip.gateway {
                legacy["gateway"] = json!(gw);
            }
            let routes: Vec<Route> = self
                .routes
                .iter()
                .filter(|r| r.dst.addr().is_ipv4() == v4)
                .map(|r| {
                    let mut r = r.clone();
                    r.strip_newer_fields();
                    r
                })
                .collect();
            if !routes.is_empty() {
                legacy["routes"] = json!(routes);
            }
            out.insert(key.into(), legacy);
        }
        out.insert("dns".into(), json!(self.dns));
        serde_json::Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniOutput {
        CniOutput {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "aa:bb:cc:dd:ee:ff".into(),
                mtu: Some(1400),
                sandbox: "/run/netns/x".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                version: None,
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![Route {
                mtu: Some(1300),
                ..Route::new("0.0.0.0/0".parse().unwrap(), None)
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn old_versions_carry_ip_version_and_drop_newer_fields() {
        let v = sample().to_version("0.3.1").unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["routes"][0].get("mtu").is_none());
        assert!(v["interfaces"][0].get("mtu").is_none());
    }

    #[test]
    fn v1_has_no_ip_version_and_round_trips() {
        let v = sample().to_version("1.1.0").unwrap();
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["routes"][0]["mtu"], 1300);
        let back = CniOutput::from_value(v).unwrap();
        assert_eq!(back, sample());
        let old = CniOutput::from_value(sample().to_version("0.4.0").unwrap()).unwrap();
        assert_eq!(old.ips, sample().ips);
    }

    const V031: &str = r#"{"cniVersion":"0.3.1",
        "interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","sandbox":"/var/run/netns/x"}],
        "ips":[{"version":"6","address":"fd00::5/64","interface":1},
               {"version":"4","address":"10.1.0.5/16","gateway":"10.1.0.1","interface":1},
               {"version":"4","address":"10.9.0.1/16","interface":0}],
        "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.1.0.10"]}}"#;

    fn parse(json: &str, fallback_version: &str) -> CniResult<CniOutput> {
        CniOutput::from_value_or(serde_json::from_str(json).unwrap(), fallback_version)
    }

    #[test]
    fn converts_between_layouts() {
        let r = parse(V031, "").unwrap();
        let v1 = r.to_version("1.0.0").unwrap();
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["ips"][1]["gateway"], "10.1.0.1");
        let v04 = r.to_version("0.4.0").unwrap();
        assert_eq!(v04["ips"][0]["version"], "6");
        let legacy = r.to_version("0.2.0").unwrap();
        assert_eq!(legacy["ip4"]["ip"], "10.1.0.5/16");
        assert_eq!(legacy["ip6"]["ip"], "fd00::5/64");
        assert_eq!(CniOutput::from_value_or(v1, "").unwrap().ips, r.ips);
    }

    #[test]
    fn parses_legacy_and_1_1_results() {
        let legacy = parse(
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24","gateway":"10.0.0.1","routes":[{"dst":"0.0.0.0/0"}]}}"#,
            "",
        )
        .unwrap();
        assert_eq!(legacy.ips[0].address.to_string(), "10.0.0.2/24");
        assert_eq!(legacy.routes.len(), 1);
        let unversioned = parse(r#"{"ip4":{"ip":"10.0.0.2/24"}}"#, "0.1.0").unwrap();
        assert_eq!(unversioned.cni_version, "0.1.0");
        assert_eq!(unversioned.ips[0].address.to_string(), "10.0.0.2/24");
        let v11 = parse(
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mtu":1400,"socketPath":"/s","pciID":"0000:00:01.0"}],
                 "ips":[{"address":"10.0.0.2/24","interface":0}],"routes":[{"dst":"10.0.0.0/8","priority":5,"table":100}]}"#,
            "",
        )
        .unwrap();
        assert_eq!(v11.interfaces[0].mtu, Some(1400));
        assert_eq!(v11.routes[0].table, Some(100));
        assert_eq!(
            v11.to_version("1.1.0").unwrap()["interfaces"][0]["pciID"],
            "0000:00:01.0"
        );
    }

    #[test]
    fn rejects_dangling_interface_index_and_non_objects() {
        let err = parse(
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24","interface":3}]}"#,
            "",
        )
        .unwrap_err();
        assert!(err.to_string().contains("interface 3"), "{err}");
        assert!(parse("[]", "1.0.0").is_err());
    }
}
