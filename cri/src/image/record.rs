//! Image records: what a name points at, and everything needed to run and export it.
//! One JSON file per image under `images/`, named by the image id (config digest),
//! written only after all the content it names is in the store.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_client::Reference;
use serde::{Deserialize, Serialize};

use super::atomic;
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::media::{Descriptor, Platform};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: its config digest (what `crictl images` shows as IMAGE ID).
    pub id: Digest,
    /// Full names with tag, e.g. `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// Full names with digest, e.g. `docker.io/library/busybox@sha256:...`.
    pub repo_digests: Vec<String>,
    /// What the name resolved to: an index or a manifest.
    pub target: Descriptor,
    /// The manifest for this platform (the same as `target` when that is a manifest).
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    pub platform: Platform,
    /// Bytes of config and compressed layers (what CRI reports as image size).
    pub size: u64,
}

impl ImageRecord {
    /// True when `query` names this image: its id (with or without `sha256:`, or an
    /// unambiguous hex prefix of at least 12 characters is left to the caller), a
    /// normalised tag, or a normalised digest reference.
    pub fn matches(&self, query: &str) -> bool {
        if query == self.id.as_str() || query == self.id.hex() {
            return true;
        }
        let Some(normalized) = normalize_reference(query) else {
            return false;
        };
        self.repo_tags.contains(&normalized) || self.repo_digests.contains(&normalized)
    }
}

/// The canonical form of an image reference (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalize_reference(reference: &str) -> Option<String> {
    reference.parse::<Reference>().ok().map(|r| {
        let name = format!("{}/{}", r.registry(), r.repository());
        match (r.tag(), r.digest()) {
            (_, Some(d)) => format!("{name}@{d}"),
            (Some(t), None) => format!("{name}:{t}"),
            (None, None) => format!("{name}:latest"),
        }
    })
}

/// The records on disk.
#[derive(Debug)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    pub fn open(root: &Path) -> Result<(RecordStore, BTreeMap<Digest, ImageRecord>)> {
        let dir = root.join("images");
        fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
        let mut records = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let path = entry.map_err(ImageError::io(&dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if atomic::is_temp_name(name) {
                fs::remove_file(&path).map_err(ImageError::io(&path))?;
                continue;
            }
            let data = fs::read(&path).map_err(ImageError::io(&path))?;
            let record: ImageRecord =
                serde_json::from_slice(&data).map_err(|e| ImageError::CorruptRecord {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            records.insert(record.id.clone(), record);
        }
        Ok((RecordStore { dir }, records))
    }

    fn path(&self, id: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", id.hex()))
    }

    pub fn save(&self, record: &ImageRecord) -> Result<()> {
        let data = serde_json::to_vec_pretty(record).map_err(|e| ImageError::CorruptRecord {
            path: self.path(&record.id),
            reason: e.to_string(),
        })?;
        atomic::write_file(&self.path(&record.id), &data)
    }

    pub fn delete(&self, id: &Digest) -> Result<()> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::io(path)(e)),
            _ => atomic::sync_parent(&path).map_err(ImageError::io(&path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        assert_eq!(
            normalize_reference("busybox").as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(
            normalize_reference("127.0.0.1:5000/a/b:v1").as_deref(),
            Some("127.0.0.1:5000/a/b:v1")
        );
    }
}
