//! The CNI operations on one network configuration list, with libcni's
//! semantics: ADD chains `prevResult` through the plugins in order and
//! caches the final result; DEL runs in reverse with the cached result;
//! CHECK needs the cache; STATUS and GC exist from 1.1.0; VERSION probes.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::cache::{CacheEntry, ResultCache};
use super::config::{NetworkConfigList, PluginConfig, is_identifier};
use super::error::CniError;
use super::exec::{Invocation, PluginExec};
use super::runtime_config::runtime_config_for;
use berth_cni::types::CniOutput;
use berth_cni::types::Version;

/// One attachment of a container to a network (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub container_id: &'a str,
    /// Path of the container's netns; empty when it no longer exists.
    pub netns: &'a str,
    pub ifname: &'a str,
    /// CNI_ARGS pairs, in order.
    pub args: &'a [(String, String)],
    /// Every capability argument; each plugin gets those it declares.
    pub capability_args: &'a Map<String, Value>,
}

/// What a plugin answered to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginVersions {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub supported_versions: Vec<String>,
}

/// Executes operations on network lists with one bin path and cache.
#[derive(Debug, Clone)]
pub struct CniRunner {
    exec: PluginExec,
    cache: ResultCache,
}

impl CniRunner {
    pub fn new(exec: PluginExec, cache: ResultCache) -> Self {
        CniRunner { exec, cache }
    }

    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    /// ADD through the whole chain; returns and caches the last result.
    pub async fn add(
        &self,
        list: &NetworkConfigList,
        att: &Attachment<'_>,
    ) -> Result<CniOutput, CniError> {
        validate(att)?;
        let mut prev: Option<CniOutput> = None;
        for plugin in &list.plugins {
            let out = self
                .call(list, plugin, "ADD", att, prev.as_ref(), None)
                .await?;
            let result = serde_json::from_slice(&out)
                .map_err(|e| e.to_string())
                .and_then(|value| {
                    CniOutput::from_value_or(value, &list.cni_version).map_err(|e| e.to_string())
                })
                .map_err(|reason| CniError::InvalidResult {
                    plugin: plugin.plugin_type.clone(),
                    network: list.name.clone(),
                    command: "ADD",
                    reason,
                })?;
            prev = Some(result);
        }
        // A parsed list always has a plugin, so there is a result.
        let result = prev.ok_or(CniError::NotInitialized)?;
        let mut entry = CacheEntry::new(&list.name, att.container_id, att.ifname, &list.bytes);
        entry.netns = att.netns.to_string();
        entry.cni_args = att
            .args
            .iter()
            .map(|(k, v)| [k.clone(), v.clone()])
            .collect();
        entry.capability_args = att.capability_args.clone();
        entry.result = Some(in_list_version(&result, list)?);
        self.cache.store(&entry)?;
        Ok(result)
    }

    /// DEL through the chain in reverse order, each plugin getting the
    /// cached ADD result (0.4.0+), then drops the cache entry.
    pub async fn del(
        &self,
        list: &NetworkConfigList,
        att: &Attachment<'_>,
    ) -> Result<(), CniError> {
        validate(att)?;
        let cached = if list.version >= Version::V0_4_0 {
            self.cached_result(list, att)?
        } else {
            None
        };
        for plugin in list.plugins.iter().rev() {
            self.call(list, plugin, "DEL", att, cached.as_ref(), None)
                .await?;
        }
        self.cache.remove(&list.name, att.container_id, att.ifname)
    }

    /// CHECK every plugin against the cached ADD result.
    pub async fn check(
        &self,
        list: &NetworkConfigList,
        att: &Attachment<'_>,
    ) -> Result<(), CniError> {
        validate(att)?;
        if list.version < Version::V0_4_0 {
            return Err(unsupported(list, "CHECK"));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self
            .cached_result(list, att)?
            .ok_or_else(|| CniError::NoCachedResult {
                network: list.name.clone(),
                container_id: att.container_id.to_string(),
                ifname: att.ifname.to_string(),
            })?;
        for plugin in &list.plugins {
            self.call(list, plugin, "CHECK", att, Some(&cached), None)
                .await?;
        }
        Ok(())
    }

    /// STATUS of every plugin (1.1.0+; older networks are assumed ready).
    pub async fn status(&self, list: &NetworkConfigList) -> Result<(), CniError> {
        if list.version < Version::V1_1_0 {
            return Ok(());
        }
        for plugin in &list.plugins {
            self.call(list, plugin, "STATUS", &detached(), None, None)
                .await?;
        }
        Ok(())
    }

    /// Garbage collection: DEL every cached attachment of this network not
    /// in `valid` (container id, ifname), then, from 1.1.0 and unless
    /// `disableGC`, send GC with the valid attachments to every plugin.
    /// Returns the first error after trying everything.
    pub async fn gc(
        &self,
        list: &NetworkConfigList,
        valid: &[(String, String)],
    ) -> Result<(), CniError> {
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|(c, i)| (c.as_str(), i.as_str()))
            .collect();
        let mut first_error = None;
        for entry in self.cache.entries(&list.name)? {
            if keep.contains(&(entry.container_id.as_str(), entry.if_name.as_str())) {
                continue;
            }
            // The attachment is deleted with the configuration it was added with.
            let cached_list =
                NetworkConfigList::from_list_bytes(&entry.config).unwrap_or_else(|_| list.clone());
            let args: Vec<(String, String)> = entry
                .cni_args
                .iter()
                .map(|[k, v]| (k.clone(), v.clone()))
                .collect();
            let att = Attachment {
                container_id: &entry.container_id,
                netns: "",
                ifname: &entry.if_name,
                args: &args,
                capability_args: &entry.capability_args,
            };
            if let Err(e) = self.del(&cached_list, &att).await {
                first_error.get_or_insert(e);
            }
        }
        if list.version >= Version::V1_1_0 && !list.disable_gc {
            let attachments: Vec<Value> = valid
                .iter()
                .map(|(c, i)| json!({"containerID": c, "ifname": i}))
                .collect();
            let extra = ("cni.dev/valid-attachments", Value::Array(attachments));
            for plugin in &list.plugins {
                if let Err(e) = self
                    .call(list, plugin, "GC", &detached(), None, Some(&extra))
                    .await
                {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Asks a plugin which spec versions it supports.
    pub async fn version(
        &self,
        plugin_type: &str,
        cni_version: &str,
    ) -> Result<PluginVersions, CniError> {
        let binary = self.exec.find(plugin_type)?;
        let stdin = json!({ "cniVersion": cni_version }).to_string();
        let inv = Invocation {
            command: "VERSION",
            ..Invocation::default()
        };
        let out = self
            .exec
            .run(&binary, &inv, stdin.as_bytes())
            .await
            .map_err(|failure| CniError::Plugin {
                plugin: plugin_type.to_string(),
                network: String::new(),
                command: "VERSION",
                failure,
            })?;
        serde_json::from_slice(&out).map_err(|e| CniError::InvalidResult {
            plugin: plugin_type.to_string(),
            network: String::new(),
            command: "VERSION",
            reason: e.to_string(),
        })
    }

    fn cached_result(
        &self,
        list: &NetworkConfigList,
        att: &Attachment<'_>,
    ) -> Result<Option<CniOutput>, CniError> {
        let Some(entry) = self.cache.load(&list.name, att.container_id, att.ifname)? else {
            return Ok(None);
        };
        let Some(raw) = entry.result else {
            return Ok(None);
        };
        CniOutput::from_value_or(raw, &list.cni_version)
            .map(Some)
            .map_err(|reason| CniError::Cache {
                network: list.name.clone(),
                path: self.cache.path(&list.name, att.container_id, att.ifname),
                reason: format!("invalid cached result: {reason}"),
            })
    }

    async fn call(
        &self,
        list: &NetworkConfigList,
        plugin: &PluginConfig,
        command: &'static str,
        att: &Attachment<'_>,
        prev: Option<&CniOutput>,
        extra: Option<&(&str, Value)>,
    ) -> Result<Vec<u8>, CniError> {
        let binary = self.exec.find(&plugin.plugin_type)?;
        let mut config = plugin_stdin(list, plugin, prev, att.capability_args)?;
        if let Some((key, value)) = extra {
            config.insert((*key).to_string(), value.clone());
        }
        let stdin = Value::Object(config).to_string();
        let args = att
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let inv = Invocation {
            command,
            container_id: att.container_id,
            netns: att.netns,
            ifname: att.ifname,
            args: &args,
        };
        tracing::debug!(network = %list.name, plugin = %plugin.plugin_type, command, container_id = att.container_id, "running CNI plugin");
        self.exec
            .run(&binary, &inv, stdin.as_bytes())
            .await
            .map_err(|failure| CniError::Plugin {
                plugin: plugin.plugin_type.clone(),
                network: list.name.clone(),
                command,
                failure,
            })
    }
}

/// The plugin's stdin: its own configuration plus the network's name and
/// version, the previous result, and `runtimeConfig` for the capabilities
/// it declares (libcni's `buildOneConfig`).
pub fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &PluginConfig,
    prev: Option<&CniOutput>,
    capability_args: &Map<String, Value>,
) -> Result<Map<String, Value>, CniError> {
    let mut config = plugin.raw.clone();
    config.insert("name".into(), Value::String(list.name.clone()));
    config.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        config.insert("prevResult".into(), in_list_version(prev, list)?);
    }
    if let Some(rc) = runtime_config_for(capability_args, &plugin.capabilities) {
        config.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Ok(config)
}

/// A result in the layout of the network's cniVersion, which was checked
/// when the list was loaded.
fn in_list_version(result: &CniOutput, list: &NetworkConfigList) -> Result<Value, CniError> {
    result
        .to_version(&list.cni_version)
        .map_err(|e| CniError::InvalidArgument {
            field: format!("network {:?} cniVersion", list.name),
            reason: e.to_string(),
        })
}

fn detached() -> Attachment<'static> {
    static EMPTY_ARGS: &[(String, String)] = &[];
    static EMPTY_CAPS: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    Attachment {
        container_id: "",
        netns: "",
        ifname: "",
        args: EMPTY_ARGS,
        capability_args: &EMPTY_CAPS,
    }
}

fn unsupported(list: &NetworkConfigList, command: &'static str) -> CniError {
    CniError::UnsupportedCommand {
        network: list.name.clone(),
        version: list.cni_version.clone(),
        command,
    }
}

/// Container ids and interface names end up in file and device names.
fn validate(att: &Attachment<'_>) -> Result<(), CniError> {
    if !is_identifier(att.container_id) {
        return Err(CniError::InvalidArgument {
            field: "container id".into(),
            reason: format!(
                "{:?} must be letters, digits, '_', '.', '-'",
                att.container_id
            ),
        });
    }
    let name = att.ifname;
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(CniError::InvalidArgument {
            field: "interface name".into(),
            reason: format!("{name:?} is not a valid Linux interface name"),
        });
    }
    Ok(())
}
