//! The on-disk result cache, in libcni's format and layout
//! (`<dir>/results/<network>-<container id>-<ifname>`), so that DEL works
//! after a restart and caches written by containerd are understood.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::CniError;

const KIND: &str = "cniCacheV1";

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    /// The network configuration list used for ADD, base64 like Go's []byte.
    #[serde(with = "base64_bytes")]
    pub config: Vec<u8>,
    pub if_name: String,
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

mod base64_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

/// The cache directory (libcni's `CacheDir`, default /var/lib/cni).
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    pub fn new(dir: PathBuf) -> Self {
        ResultCache { dir }
    }

    fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.results_dir()
            .join(format!("{network}-{container_id}-{ifname}"))
    }

    fn error(network: &str, path: &Path, reason: impl ToString) -> CniError {
        CniError::Cache {
            network: network.to_string(),
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    /// Writes the entry atomically (temp file + rename), mode 0600. Not
    /// fsynced, as libcni does not: the entry must survive a restart of
    /// the daemon, which the page cache covers; after a power loss the
    /// netns is gone and DEL works without the entry.
    pub fn store(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let err = |e: &dyn ToString| Self::error(&entry.network_name, &path, e.to_string());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.results_dir())
            .map_err(|e| err(&e))?;
        let bytes = serde_json::to_vec(entry).map_err(|e| err(&e))?;
        // Appended, not an extension: network names may contain dots.
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(&e))?;
        file.write_all(&bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                err(&e)
            })
    }

    /// The cached entry, `None` if there is none.
    pub fn load(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CacheEntry>, CniError> {
        let path = self.path(network, container_id, ifname);
        Self::read(network, &path)
    }

    fn read(network: &str, path: &Path) -> Result<Option<CacheEntry>, CniError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Self::error(network, path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::error(network, path, e)),
        }
    }

    /// Removes the entry; a missing one is fine.
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let path = self.path(network, container_id, ifname);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Self::error(network, &path, e))
            }
            _ => Ok(()),
        }
    }

    /// Every cached attachment of `network`. Unreadable files are skipped
    /// (they may belong to another writer mid-rename).
    pub fn entries(&self, network: &str) -> Result<Vec<CacheEntry>, CniError> {
        let dir = self.results_dir();
        let listing = match fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::error(network, &dir, e)),
        };
        let prefix = format!("{network}-");
        let mut entries = Vec::new();
        for item in listing.flatten() {
            let name = item.file_name();
            if !name.to_string_lossy().starts_with(&prefix) {
                continue;
            }
            if let Ok(Some(entry)) = Self::read(network, &item.path()) {
                if entry.kind == KIND && entry.network_name == network {
                    entries.push(entry);
                }
            }
        }
        Ok(entries)
    }
}

impl CacheEntry {
    pub fn new(network_name: &str, container_id: &str, if_name: &str, config: &[u8]) -> Self {
        CacheEntry {
            kind: KIND.to_string(),
            container_id: container_id.to_string(),
            config: config.to_vec(),
            if_name: if_name.to_string(),
            network_name: network_name.to_string(),
            netns: String::new(),
            cni_args: Vec::new(),
            capability_args: Map::new(),
            result: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache file as libcni writes it (containerd's hosts have these).
    const LIBCNI_ENTRY: &str = r#"{"kind":"cniCacheV1","containerId":"abc","config":"eyJuYW1lIjoibiJ9","ifName":"eth0","networkName":"n","cniArgs":[["IgnoreUnknown","1"],["K8S_POD_NAME","p"]],"capabilityArgs":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"tcp"}]},"result":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}"#;

    #[test]
    fn reads_and_writes_libcni_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path().to_path_buf());
        let path = cache.path("n", "abc", "eth0");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, LIBCNI_ENTRY).unwrap();
        let entry = cache.load("n", "abc", "eth0").unwrap().unwrap();
        assert_eq!(entry.config, br#"{"name":"n"}"#);
        assert_eq!(
            entry.cni_args[1],
            ["K8S_POD_NAME".to_string(), "p".to_string()]
        );
        assert_eq!(
            entry.result.as_ref().unwrap()["ips"][0]["address"],
            "10.0.0.2/24"
        );
        assert_eq!(cache.entries("n").unwrap(), vec![entry.clone()]);
        assert!(cache.entries("other").unwrap().is_empty());

        cache.remove("n", "abc", "eth0").unwrap();
        cache.remove("n", "abc", "eth0").unwrap();
        assert!(cache.load("n", "abc", "eth0").unwrap().is_none());
        cache.store(&entry).unwrap();
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let original: Value = serde_json::from_str(LIBCNI_ENTRY).unwrap();
        assert_eq!(written, original);
    }

    #[test]
    fn dotted_network_names_keep_one_entry_per_attachment() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path().to_path_buf());
        let entries: Vec<CacheEntry> = ["c1", "c2"]
            .into_iter()
            .map(|id| CacheEntry::new("pods.v1", id, "eth0", b"{}"))
            .collect();
        std::thread::scope(|s| {
            for entry in &entries {
                s.spawn(|| cache.store(entry).unwrap());
            }
        });
        let mut found = cache.entries("pods.v1").unwrap();
        found.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        assert_eq!(found, entries);
        let names: Vec<_> = std::fs::read_dir(cache.results_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
