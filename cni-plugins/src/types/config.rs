//! Network configuration: the keys every plugin shares, and conflists.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{CniError, CniResult, ErrorCode};
use super::result::Dns;

/// The keys of a plugin's network configuration that the spec defines.
/// Plugins flatten this into their own config struct.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capabilities: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    #[serde(
        rename = "runtimeConfig",
        default,
        skip_serializing_if = "Value::is_null"
    )]
    pub runtime_config: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub args: Value,
}

/// The `ipam` section; only `type` is common, the rest belongs to the IPAM plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

/// Decodes a plugin's configuration from stdin bytes. Errors name the field
/// serde stumbled on (e.g. "missing field `name`").
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8]) -> CniResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            ErrorCode::InvalidConfig
        } else {
            ErrorCode::Decoding
        };
        let msg = if e.is_data() {
            "invalid network configuration"
        } else {
            "cannot decode network configuration"
        };
        CniError::new(code, msg).with_details(e)
    })
}

/// Validates the network name as the spec requires: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn validate_name(name: &str) -> CniResult<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(CniError::invalid_config(format!(
            "field \"name\": {name:?} is not a valid network name"
        )))
    }
}

/// A network configuration list (`.conflist`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetConfList {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    pub name: String,
    #[serde(rename = "disableCheck", default)]
    pub disable_check: bool,
    #[serde(rename = "disableGC", default)]
    pub disable_gc: bool,
    pub plugins: Vec<Value>,
}

impl NetConfList {
    pub fn parse(bytes: &[u8]) -> CniResult<Self> {
        let list: NetConfList = parse_config(bytes)?;
        validate_name(&list.name)?;
        if list.plugins.is_empty() {
            return Err(CniError::invalid_config(
                "field \"plugins\": the list is empty",
            ));
        }
        Ok(list)
    }

    /// The version to run the list with: with `cniVersions` (1.1.0), the
    /// highest one that `supported` also lists; otherwise `cniVersion`.
    pub fn effective_version(&self, supported: &[&str]) -> CniResult<String> {
        if self.cni_versions.is_empty() {
            return Ok(self.cni_version.clone());
        }
        let mut best: Option<(super::Version, &String)> = None;
        for v in self
            .cni_versions
            .iter()
            .filter(|v| supported.contains(&v.as_str()))
        {
            let parsed = super::Version::parse(v)?;
            if best.is_none_or(|(b, _)| parsed > b) {
                best = Some((parsed, v));
            }
        }
        best.map(|(_, v)| v.clone()).ok_or_else(|| {
            CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "field \"cniVersions\": none of {:?} is supported",
                    self.cni_versions
                ),
            )
        })
    }

    /// The stdin a runtime sends to plugin `index`: the plugin's own object
    /// plus `name`, `cniVersion`, the `runtimeConfig` keys the plugin declared
    /// as capabilities, and the previous plugin's result.
    pub fn plugin_config(
        &self,
        index: usize,
        capability_args: &BTreeMap<String, Value>,
        prev_result: Option<&Value>,
    ) -> CniResult<Value> {
        let mut conf = self.plugins.get(index).cloned().ok_or_else(|| {
            CniError::invalid_config(format!("field \"plugins\": no plugin at index {index}"))
        })?;
        let obj = conf.as_object_mut().ok_or_else(|| {
            CniError::invalid_config(format!("field \"plugins[{index}]\": not an object"))
        })?;
        obj.insert("name".into(), Value::String(self.name.clone()));
        let version = self.effective_version(super::SUPPORTED_VERSIONS)?;
        obj.insert("cniVersion".into(), Value::String(version));
        let declared: BTreeMap<String, bool> = obj
            .get("capabilities")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        let runtime: serde_json::Map<String, Value> = capability_args
            .iter()
            .filter(|(k, _)| declared.get(*k).copied().unwrap_or(false))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !runtime.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        if let Some(prev) = prev_result {
            obj.insert("prevResult".into(), prev.clone());
        }
        Ok(conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_field() {
        let err =
            parse_config::<NetConf>(br#"{"cniVersion":"1.0.0","type":"bridge"}"#).unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.details.contains("name"), "{}", err.details);
        let err = parse_config::<NetConf>(b"{not json").unwrap_err();
        assert_eq!(err.code, 6);
    }

    #[test]
    fn validates_names() {
        assert!(validate_name("mynet-1.a_b").is_ok());
        assert!(validate_name("-bad").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
    }

    #[test]
    fn cni_versions_pick_the_highest_supported() {
        let list = NetConfList::parse(
            br#"{"cniVersion":"1.0.0","cniVersions":["0.4.0","1.1.0","9.0.0"],"name":"n","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert_eq!(
            list.effective_version(&["0.4.0", "1.0.0", "1.1.0"])
                .unwrap(),
            "1.1.0"
        );
        assert_eq!(
            list.effective_version(&["0.4.0", "1.0.0"]).unwrap(),
            "0.4.0"
        );
        assert_eq!(list.effective_version(&["0.3.1"]).unwrap_err().code, 1);
        assert_eq!(
            list.plugin_config(0, &BTreeMap::new(), None).unwrap()["cniVersion"],
            "1.1.0"
        );
    }

    #[test]
    fn conflist_injects_name_version_capabilities_and_prev_result() {
        let list = NetConfList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let caps = BTreeMap::from([
            (
                "portMappings".to_string(),
                serde_json::json!([{"hostPort": 8080}]),
            ),
            ("bandwidth".to_string(), serde_json::json!({})),
        ]);
        let prev = serde_json::json!({"cniVersion":"1.0.0"});
        let first = list.plugin_config(0, &caps, None).unwrap();
        assert_eq!(first["name"], "n");
        assert!(first.get("runtimeConfig").is_none());
        let second = list.plugin_config(1, &caps, Some(&prev)).unwrap();
        assert_eq!(second["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(second["runtimeConfig"].get("bandwidth").is_none());
        assert_eq!(second["prevResult"], prev);
    }
}
