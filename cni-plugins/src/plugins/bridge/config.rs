//! The bridge plugin's network configuration.

use serde::Deserialize;

use crate::netfilter::Backend;
use crate::types::{CniError, CniResult, NetConf, parse_config};

/// One `vlanTrunk` entry: a single `id` or a `minID`..=`maxID` range.
#[derive(Debug, Clone, Deserialize)]
pub struct TrunkEntry {
    #[serde(default)]
    pub id: Option<u16>,
    #[serde(rename = "minID", default)]
    pub min_id: Option<u16>,
    #[serde(rename = "maxID", default)]
    pub max_id: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct MacArg {
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ArgsSection {
    #[serde(default)]
    cni: Option<MacArg>,
}

fn default_bridge() -> String {
    "cni0".into()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct BridgeConf {
    #[serde(flatten)]
    pub net: NetConf,
    #[serde(rename = "bridge", default = "default_bridge")]
    pub bridge: String,
    #[serde(rename = "isGateway", default)]
    pub is_gateway: bool,
    #[serde(rename = "isDefaultGateway", default)]
    pub is_default_gateway: bool,
    #[serde(rename = "forceAddress", default)]
    pub force_address: bool,
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: bool,
    #[serde(rename = "ipMasqBackend", default)]
    pub ip_masq_backend: Option<Backend>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(rename = "hairpinMode", default)]
    pub hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub vlan: u16,
    #[serde(rename = "vlanTrunk", default)]
    pub vlan_trunk: Vec<TrunkEntry>,
    #[serde(rename = "preserveDefaultVlan", default = "default_true")]
    pub preserve_default_vlan: bool,
    #[serde(rename = "macspoofchk", default)]
    pub mac_spoof_check: bool,
    #[serde(rename = "enabledad", default)]
    pub enable_dad: bool,
    #[serde(rename = "disableContainerInterface", default)]
    pub disable_container_interface: bool,
    #[serde(rename = "args", default)]
    args: Option<ArgsSection>,
}

impl BridgeConf {
    /// Parses and validates; `cni_args_mac` is the MAC from CNI_ARGS, if any.
    pub fn parse(stdin: &[u8]) -> CniResult<Self> {
        let mut conf: BridgeConf = parse_config(stdin)?;
        if conf.is_default_gateway {
            conf.is_gateway = true;
        }
        if conf.vlan > 4094 {
            return Err(CniError::invalid_config(format!(
                "field \"vlan\": {} is not in 0..4094",
                conf.vlan
            )));
        }
        conf.trunk_ids()?;
        if conf.bridge.is_empty() || conf.bridge.len() > 15 {
            return Err(CniError::invalid_config(format!(
                "field \"bridge\": {:?} is not a valid interface name",
                conf.bridge
            )));
        }
        if conf.mtu == Some(0) {
            conf.mtu = None;
        }
        Ok(conf)
    }

    pub fn masq_backend(&self) -> Backend {
        self.ip_masq_backend.unwrap_or_default()
    }

    pub fn vlan_filtering(&self) -> bool {
        self.vlan != 0 || !self.vlan_trunk.is_empty()
    }

    /// All trunk VLAN ids, validated.
    pub fn trunk_ids(&self) -> CniResult<Vec<u16>> {
        let mut ids = Vec::new();
        for (i, t) in self.vlan_trunk.iter().enumerate() {
            let bad =
                |what: &str| CniError::invalid_config(format!("field \"vlanTrunk[{i}]\": {what}"));
            match (t.id, t.min_id, t.max_id) {
                (Some(id), None, None) if (1..=4094).contains(&id) => ids.push(id),
                (None, Some(lo), Some(hi))
                    if (1..=4094).contains(&lo) && (1..=4094).contains(&hi) && lo <= hi =>
                {
                    ids.extend(lo..=hi)
                }
                (None, Some(_), None) | (None, None, Some(_)) => {
                    return Err(bad("minID and maxID must be given together"));
                }
                _ => return Err(bad("id or minID..maxID must be within 1..4094")),
            }
        }
        if self.vlan != 0 && ids.contains(&self.vlan) {
            return Err(CniError::invalid_config(format!(
                "field \"vlanTrunk\": contains the access vlan {}",
                self.vlan
            )));
        }
        Ok(ids)
    }

    /// MAC requested through `runtimeConfig.mac` (capability) or `args.cni.mac`.
    pub fn requested_mac(&self, cni_args_mac: Option<&str>) -> CniResult<Option<Vec<u8>>> {
        let from_runtime = self
            .net
            .runtime_config
            .get("mac")
            .and_then(|m| m.as_str())
            .map(str::to_string);
        let from_args = self
            .args
            .as_ref()
            .and_then(|a| a.cni.as_ref())
            .and_then(|c| c.mac.clone());
        let Some((field, mac)) = from_runtime
            .map(|m| ("runtimeConfig.mac", m))
            .or(from_args.map(|m| ("args.cni.mac", m)))
            .or(cni_args_mac.map(|m| ("CNI_ARGS MAC", m.to_string())))
        else {
            return Ok(None);
        };
        crate::netlink::parse_mac(&mac).map(Some).ok_or_else(|| {
            CniError::invalid_config(format!("field \"{field}\": {mac:?} is not a MAC address"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_implications() {
        let c = BridgeConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","isDefaultGateway":true}"#,
        )
        .unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(c.is_gateway);
        assert!(c.preserve_default_vlan);
        assert_eq!(c.masq_backend(), Backend::Iptables);
    }

    #[test]
    fn validates_vlans_naming_fields() {
        let e =
            BridgeConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","vlan":5000}"#)
                .unwrap_err();
        assert!(e.msg.contains("\"vlan\""));
        let e = BridgeConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","vlanTrunk":[{"minID":10}]}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("vlanTrunk[0]"));
        let c = BridgeConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","vlanTrunk":[{"id":5},{"minID":10,"maxID":12}]}"#).unwrap();
        assert_eq!(c.trunk_ids().unwrap(), [5, 10, 11, 12]);
        let e = BridgeConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipMasqBackend":"pf"}"#,
        )
        .unwrap_err();
        assert!(
            e.details.contains("ipMasqBackend") || e.details.contains("pf"),
            "{}",
            e.details
        );
    }

    #[test]
    fn mac_sources() {
        let c = BridgeConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","runtimeConfig":{"mac":"02:00:00:00:00:09"}}"#).unwrap();
        assert_eq!(c.requested_mac(None).unwrap(), Some(vec![2, 0, 0, 0, 0, 9]));
        let c = BridgeConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","args":{"cni":{"mac":"zz"}}}"#,
        )
        .unwrap();
        assert!(
            c.requested_mac(None)
                .unwrap_err()
                .msg
                .contains("args.cni.mac")
        );
    }
}
