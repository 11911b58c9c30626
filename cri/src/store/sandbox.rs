//! The sandbox store: every pod sandbox's record, persisted as
//! `<dir>/<id>.json` and reloaded on start.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_proto::runtime::v1 as cri;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::{NameIndex, StoreError, atomic};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// What the daemon knows about one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// `<name>_<namespace>_<uid>_<attempt>`, unique among sandboxes.
    pub name: String,
    /// The RunPodSandbox config, protobuf-encoded (base64 in the file).
    #[serde(with = "config_bytes")]
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    pub created_at: i64,
    pub state: SandboxState,
    /// The pinned pod netns; None with host networking or once removed.
    pub netns: Option<PathBuf>,
    pub pause_pid: Option<i32>,
    /// The pause process's start time (clock ticks), to tell it from a
    /// later process that reuses its pid.
    pub pause_start_time: Option<u64>,
    /// Pod IPs, the primary first.
    pub ips: Vec<String>,
    /// Whether CNI ADD succeeded and DEL has not yet.
    pub network_attached: bool,
    /// Files made for the pod (hostname, hosts, resolv.conf).
    pub dir: PathBuf,
}

impl SandboxRecord {
    pub fn metadata(&self) -> cri::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }

    pub fn namespace_options(&self) -> cri::NamespaceOption {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default()
    }

    pub fn host_network(&self) -> bool {
        self.namespace_options().network == cri::NamespaceMode::Node as i32
    }
}

mod config_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        config: &cri::PodSandboxConfig,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(config.encode_to_vec()))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<cri::PodSandboxConfig, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        cri::PodSandboxConfig::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }
}

/// Owner of all sandbox records.
#[derive(Debug)]
pub struct SandboxStore {
    dir: PathBuf,
    records: Mutex<BTreeMap<String, SandboxRecord>>,
    names: NameIndex,
}

impl SandboxStore {
    /// Opens the store at `dir`, loading every record found there.
    pub fn open(dir: &Path) -> Result<SandboxStore, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            what: "creating sandbox store".into(),
            path: dir.to_path_buf(),
            source,
        })?;
        let store = SandboxStore {
            dir: dir.to_path_buf(),
            records: Mutex::default(),
            names: NameIndex::default(),
        };
        let entries = fs::read_dir(dir).map_err(|source| StoreError::Io {
            what: "listing sandbox store".into(),
            path: dir.to_path_buf(),
            source,
        })?;
        let mut records = store.lock();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = fs::read(&path).map_err(|source| StoreError::Io {
                what: "reading sandbox record".into(),
                path: path.clone(),
                source,
            })?;
            let record: SandboxRecord =
                serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            store.names.reserve(&record.name, &record.id)?;
            records.insert(record.id.clone(), record);
        }
        drop(records);
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SandboxRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn persist(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        let data = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            path: self.path(&record.id),
            reason: e.to_string(),
        })?;
        atomic::write(&self.path(&record.id), &data)
    }

    /// Reserves a sandbox name for `id` before anything is made for it.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), StoreError> {
        Ok(self.names.reserve(name, id)?)
    }

    pub fn release_name(&self, name: &str) {
        self.names.release(name);
    }

    /// Adds or replaces a record, on disk first.
    pub fn put(&self, record: SandboxRecord) -> Result<(), StoreError> {
        self.persist(&record)?;
        self.lock().insert(record.id.clone(), record);
        Ok(())
    }

    /// Changes a record with `change` and persists it.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut SandboxRecord),
    ) -> Result<SandboxRecord, StoreError> {
        let mut records = self.lock();
        let record = records.get_mut(id).ok_or_else(|| StoreError::NotFound {
            kind: "sandbox",
            id: id.to_string(),
        })?;
        let mut changed = record.clone();
        change(&mut changed);
        self.persist(&changed)?;
        *record = changed.clone();
        Ok(changed)
    }

    /// The record whose id is `id` or starts with it (unambiguously).
    pub fn get(&self, id: &str) -> Result<SandboxRecord, StoreError> {
        let records = self.lock();
        if let Some(record) = records.get(id) {
            return Ok(record.clone());
        }
        let mut matches = records
            .range(id.to_string()..)
            .take_while(|(k, _)| k.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some((_, record)), None) if !id.is_empty() => Ok(record.clone()),
            (Some(_), Some(_)) => Err(StoreError::Ambiguous {
                kind: "sandbox",
                prefix: id.to_string(),
            }),
            _ => Err(StoreError::NotFound {
                kind: "sandbox",
                id: id.to_string(),
            }),
        }
    }

    pub fn list(&self) -> Vec<SandboxRecord> {
        self.lock().values().cloned().collect()
    }

    /// Deletes a record and frees its name.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    what: "removing sandbox record".into(),
                    path,
                    source,
                });
            }
        }
        if let Some(record) = self.lock().remove(id) {
            self.names.release(&record.name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            name: name.into(),
            config: cri::PodSandboxConfig {
                hostname: "web".into(),
                ..Default::default()
            },
            runtime_handler: String::new(),
            created_at: 1,
            state: SandboxState::Ready,
            netns: Some("/var/run/netns/cni-x".into()),
            pause_pid: Some(42),
            pause_start_time: Some(7),
            ips: vec!["10.1.0.2".into()],
            network_attached: true,
            dir: "/tmp/x".into(),
        }
    }

    #[test]
    fn records_survive_reopening_and_keep_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = SandboxStore::open(dir.path()).unwrap();
        store.reserve_name("web_default_u_0", "abc1").unwrap();
        store.put(record("abc1", "web_default_u_0")).unwrap();
        store
            .update("abc1", |r| r.state = SandboxState::NotReady)
            .unwrap();
        drop(store);

        let store = SandboxStore::open(dir.path()).unwrap();
        let loaded = store.get("abc").unwrap();
        assert_eq!(loaded.state, SandboxState::NotReady);
        assert_eq!(loaded.config.hostname, "web");
        let err = store.reserve_name("web_default_u_0", "other").unwrap_err();
        assert!(
            err.to_string().contains("is reserved for \"abc1\""),
            "{err}"
        );
        store.delete("abc1").unwrap();
        assert!(matches!(
            store.get("abc1"),
            Err(StoreError::NotFound { .. })
        ));
        store.reserve_name("web_default_u_0", "other").unwrap();
    }

    #[test]
    fn ambiguous_prefixes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SandboxStore::open(dir.path()).unwrap();
        store.put(record("ab1", "a")).unwrap();
        store.put(record("ab2", "b")).unwrap();
        assert!(matches!(store.get("ab"), Err(StoreError::Ambiguous { .. })));
        assert_eq!(store.get("ab2").unwrap().name, "b");
    }
}
