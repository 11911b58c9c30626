//! The ADD result, held in the 1.x shape and converted on output to the
//! version the network config asked for.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::{CniError, CniResult};
use super::version::Version;

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

/// An ADD result (also what IPAM plugins return and what arrives as prevResult).
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

impl CniOutput {
    /// Parses a result of any supported version (the `version` field of
    /// 0.3.x/0.4.0 IP entries is accepted and dropped).
    pub fn from_value(value: serde_json::Value) -> CniResult<Self> {
        let mut out: CniOutput = serde_json::from_value(value)
            .map_err(|e| CniError::decoding("cannot decode CNI result").with_details(e))?;
        for ip in &mut out.ips {
            ip.version = None;
        }
        Ok(out)
    }

    /// Renders the result in `version` (the config's cniVersion).
    pub fn to_version(&self, version: &str) -> CniResult<serde_json::Value> {
        let v = Version::parse(version)?;
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
        if v < Version(1, 1, 0) {
            out.routes.iter_mut().for_each(Route::strip_newer_fields);
            for iface in &mut out.interfaces {
                iface.mtu = None;
                iface.socket_path.clear();
                iface.pci_id.clear();
            }
        }
        serde_json::to_value(&out).map_err(|e| CniError::internal("cannot encode result", e))
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
}
