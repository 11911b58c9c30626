//! portmap configuration: the `portMappings` capability and backend options.

use std::net::IpAddr;

use serde::Deserialize;

use crate::netfilter::Backend;
use crate::types::{CniError, CniOutput, CniResult, NetConf, parse_config};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}

/// One entry of `runtimeConfig.portMappings`, as CRI runtimes send it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default = "default_protocol", deserialize_with = "protocol_any_case")]
    pub protocol: Protocol,
    #[serde(rename = "hostIP", default, deserialize_with = "empty_ip_is_none")]
    pub host_ip: Option<IpAddr>,
}

fn protocol_any_case<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    let s = String::deserialize(d)?;
    match s.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        other => Err(serde::de::Error::custom(format!(
            "protocol {other:?} is not tcp, udp or sctp"
        ))),
    }
}

fn empty_ip_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(ip) => ip
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("hostIP {ip:?} is not an IP address"))),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    port_mappings: Vec<PortMapping>,
}

fn default_true() -> bool {
    true
}

fn default_mark_bit() -> u32 {
    13
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortMapConf {
    #[serde(flatten)]
    pub net: NetConf,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: RuntimeConfig,
    /// Masquerade hairpin and localhost traffic (default true).
    #[serde(default = "default_true")]
    pub snat: bool,
    #[serde(rename = "markMasqBit", default = "default_mark_bit")]
    pub mark_masq_bit: u32,
    #[serde(rename = "externalSetMarkChain", default)]
    pub external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsV4", default)]
    pub conditions_v4: Vec<String>,
    #[serde(rename = "conditionsV6", default)]
    pub conditions_v6: Vec<String>,
    #[serde(default)]
    pub backend: Option<Backend>,
}

impl PortMapConf {
    pub fn parse(stdin: &[u8]) -> CniResult<Self> {
        let conf: PortMapConf = parse_config(stdin)?;
        if conf.mark_masq_bit > 31 {
            return Err(CniError::invalid_config(format!(
                "field \"markMasqBit\": {} is not in 0..31",
                conf.mark_masq_bit
            )));
        }
        for (i, m) in conf.mappings().iter().enumerate() {
            if m.host_port == 0 || m.container_port == 0 {
                return Err(CniError::invalid_config(format!(
                    "field \"runtimeConfig.portMappings[{i}]\": hostPort and containerPort must be 1..65535"
                )));
            }
        }
        Ok(conf)
    }

    pub fn mappings(&self) -> &[PortMapping] {
        &self.runtime_config.port_mappings
    }

    pub fn backend(&self) -> Backend {
        self.backend.unwrap_or_default()
    }

    pub fn mark(&self) -> u32 {
        1 << self.mark_masq_bit
    }

    /// The container addresses from prevResult, one per family at most.
    pub fn container_ips(&self) -> CniResult<(Option<IpAddr>, Option<IpAddr>)> {
        let prev = self.net.prev_result.clone().ok_or_else(|| {
            CniError::invalid_config(
                "field \"prevResult\": portmap must be called as a chained plugin",
            )
        })?;
        let prev = CniOutput::from_value(prev)?;
        let sandboxed = |idx: Option<usize>| {
            idx.and_then(|i| prev.interfaces.get(i))
                .is_none_or(|iface| !iface.sandbox.is_empty())
        };
        let pick = |v4: bool| {
            prev.ips
                .iter()
                .find(|ip| ip.address.addr().is_ipv4() == v4 && sandboxed(ip.interface))
                .map(|ip| ip.address.addr())
        };
        Ok((pick(true), pick(false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_mappings() {
        let c = PortMapConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"portmap","runtimeConfig":{"portMappings":[
                {"hostPort":8080,"containerPort":80,"protocol":"TCP","hostIP":""},
                {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.mappings().len(), 2);
        assert_eq!(c.mappings()[0].protocol, Protocol::Tcp);
        assert_eq!(c.mappings()[0].host_ip, None);
        assert_eq!(c.mappings()[1].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert!(c.snat);
        assert_eq!(c.mark(), 0x2000);
    }

    #[test]
    fn rejects_bad_mappings() {
        let e = PortMapConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}"#).unwrap_err();
        assert!(e.msg.contains("portMappings[0]"));
        let e = PortMapConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":1,"containerPort":80,"protocol":"icmp"}]}}"#).unwrap_err();
        assert!(e.details.contains("icmp"));
    }
}
