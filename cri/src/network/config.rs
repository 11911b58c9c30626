//! Network configuration lists (`.conflist`) and single-plugin network
//! configurations (`.conf`/`.json`), parsed and validated as libcni does.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};

use berth_cni::types::{KNOWN_VERSIONS, Version};

/// One plugin of a network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The `type` field: the binary's file name.
    pub plugin_type: String,
    /// Capabilities declared `true` in the plugin's `capabilities` object.
    pub capabilities: BTreeSet<String>,
    /// The plugin's configuration object as written.
    pub raw: Map<String, Value>,
}

/// A network: a name, a spec version and the ordered plugin chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    /// `cniVersion` exactly as written (sent back to plugins unchanged).
    pub cni_version: String,
    /// The same, parsed for feature checks.
    pub version: Version,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<PluginConfig>,
    /// The list as JSON bytes, stored in the result cache like libcni does.
    pub bytes: Vec<u8>,
}

/// Why a configuration file or document is not a usable network.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("missing {0:?}")]
    Missing(&'static str),
    #[error("invalid {field:?}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl NetworkConfigList {
    /// Loads a file: `.conflist` as a list, anything else as a single
    /// plugin network wrapped in a list.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if path.extension().is_some_and(|e| e == "conflist") {
            Self::from_list_bytes(&bytes)
        } else {
            Self::from_single_bytes(&bytes)
        }
    }

    /// Parses a network configuration list.
    pub fn from_list_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let doc = parse_object(bytes)?;
        Self::from_list_object(doc, bytes.to_vec())
    }

    /// Parses a single-plugin network configuration and wraps it in a list
    /// with the same name and version (libcni's `ConfListFromConf`).
    pub fn from_single_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let doc = parse_object(bytes)?;
        if doc
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ConfigError::Missing("type"));
        }
        let mut list = Map::new();
        for key in ["name", "cniVersion"] {
            if let Some(v) = doc.get(key) {
                list.insert(key.to_string(), v.clone());
            }
        }
        list.insert("plugins".into(), Value::Array(vec![Value::Object(doc)]));
        let bytes = serde_json::to_vec(&list).map_err(|e| ConfigError::Json(e.to_string()))?;
        Self::from_list_object(list, bytes)
    }

    fn from_list_object(doc: Map<String, Value>, bytes: Vec<u8>) -> Result<Self, ConfigError> {
        let name = match doc.get("name") {
            None => return Err(ConfigError::Missing("name")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid("name", "not a string")),
        };
        validate_network_name(&name)?;
        // Configurations from before 0.2.0 may omit the version; plugins
        // then assume 0.1.0, and so do we.
        let cni_version = match doc.get("cniVersion") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid("cniVersion", "not a string")),
        };
        let version = if cni_version.is_empty() || KNOWN_VERSIONS.contains(&cni_version.as_str()) {
            Version::parse_or_oldest(&cni_version).map_err(|e| invalid("cniVersion", e.msg))?
        } else {
            return Err(invalid(
                "cniVersion",
                format!("{cni_version:?} is not one of {KNOWN_VERSIONS:?}"),
            ));
        };
        let disable_check = bool_field(&doc, "disableCheck")?;
        let disable_gc = bool_field(&doc, "disableGC")?;
        let plugins = match doc.get("plugins") {
            None => return Err(ConfigError::Missing("plugins")),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_plugin(i, item))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(invalid("plugins", "not an array")),
        };
        if plugins.is_empty() {
            return Err(invalid("plugins", "no plugins in list"));
        }
        Ok(NetworkConfigList {
            name,
            cni_version,
            version,
            disable_check,
            disable_gc,
            plugins,
            bytes,
        })
    }

    /// The loopback network containerd sets up in every pod before the
    /// configured one.
    pub fn loopback() -> Self {
        let bytes =
            br#"{"cniVersion":"0.3.1","name":"cni-loopback","plugins":[{"type":"loopback"}]}"#;
        let mut raw = Map::new();
        raw.insert("type".into(), Value::String("loopback".into()));
        NetworkConfigList {
            name: "cni-loopback".into(),
            cni_version: "0.3.1".into(),
            version: Version(0, 3, 1),
            disable_check: false,
            disable_gc: false,
            plugins: vec![PluginConfig {
                plugin_type: "loopback".into(),
                capabilities: BTreeSet::new(),
                raw,
            }],
            bytes: bytes.to_vec(),
        }
    }
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ConfigError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ConfigError::Json("top level is not an object".into())),
        Err(e) => Err(ConfigError::Json(e.to_string())),
    }
}

fn bool_field(doc: &Map<String, Value>, key: &str) -> Result<bool, ConfigError> {
    match doc.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(key, "not a boolean")),
    }
}

fn parse_plugin(index: usize, item: &Value) -> Result<PluginConfig, ConfigError> {
    let field = |name: &str| format!("plugins[{index}].{name}");
    let Value::Object(raw) = item else {
        return Err(invalid(format!("plugins[{index}]"), "not an object"));
    };
    let plugin_type = match raw.get("type") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => return Err(invalid(field("type"), "missing")),
        Some(_) => return Err(invalid(field("type"), "not a string")),
    };
    if plugin_type.contains('/') {
        return Err(invalid(field("type"), "must be a file name, not a path"));
    }
    let capabilities = match raw.get("capabilities") {
        None => BTreeSet::new(),
        Some(Value::Object(caps)) => caps
            .iter()
            .filter(|(_, enabled)| enabled.as_bool() == Some(true))
            .map(|(name, _)| name.clone())
            .collect(),
        Some(_) => return Err(invalid(field("capabilities"), "not an object")),
    };
    Ok(PluginConfig {
        plugin_type,
        capabilities,
        raw: raw.clone(),
    })
}

/// Network names must be usable in file names (cache, host-local dataDir).
fn validate_network_name(name: &str) -> Result<(), ConfigError> {
    if !is_identifier(name) {
        return Err(invalid(
            "name",
            format!(
                "{name:?} must start with a letter or digit and contain only letters, digits, '_', '.', '-'"
            ),
        ));
    }
    Ok(())
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, the CNI rule for network names and
/// container ids.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_plugin_conf_is_wrapped() {
        let list = NetworkConfigList::from_single_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","capabilities":{"portMappings":true,"dns":false}}"#,
        )
        .unwrap();
        assert_eq!(list.name, "n");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type, "bridge");
        assert_eq!(
            list.plugins[0].capabilities,
            BTreeSet::from(["portMappings".to_string()])
        );
    }

    #[test]
    fn rejects_bad_lists_naming_the_field() {
        let err = |s: &str| {
            NetworkConfigList::from_list_bytes(s.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"cniVersion":"1.0.0","plugins":[]}"#).contains("\"name\""));
        assert!(err(r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#).contains("no plugins"));
        assert!(
            err(r#"{"cniVersion":"9.0.0","name":"n","plugins":[{"type":"x"}]}"#)
                .contains("cniVersion")
        );
        assert!(
            err(r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"a":1}]}"#)
                .contains("plugins[0].type")
        );
        assert!(
            err(r#"{"cniVersion":"1.0.0","name":"a/b","plugins":[{"type":"x"}]}"#).contains("name")
        );
        assert!(err("{").contains("invalid JSON"));
    }
}
