//! Which holders (containers, snapshots) use which images, so an image in use is never
//! removed or collected. Persisted, because containers outlive daemon restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::atomic;
use super::digest::Digest;
use super::error::{ImageError, Result};

#[derive(Debug)]
pub struct Leases {
    path: PathBuf,
    /// holder → image id
    by_holder: BTreeMap<String, Digest>,
}

impl Leases {
    pub fn open(root: &Path) -> Result<Leases> {
        let path = root.join("leases.json");
        let by_holder = match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| ImageError::CorruptRecord {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(ImageError::io(&path)(e)),
        };
        Ok(Leases { path, by_holder })
    }

    pub fn acquire(&mut self, image: &Digest, holder: &str) -> Result<()> {
        self.by_holder.insert(holder.to_string(), image.clone());
        self.save()
    }

    pub fn release(&mut self, holder: &str) -> Result<()> {
        if self.by_holder.remove(holder).is_some() {
            self.save()?;
        }
        Ok(())
    }

    pub fn holders(&self, image: &Digest) -> BTreeSet<&str> {
        self.by_holder
            .iter()
            .filter(|(_, id)| *id == image)
            .map(|(h, _)| h.as_str())
            .collect()
    }

    fn save(&self) -> Result<()> {
        let data = serde_json::to_vec(&self.by_holder).map_err(|e| ImageError::CorruptRecord {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        atomic::write_file(&self.path, &data)
    }
}
