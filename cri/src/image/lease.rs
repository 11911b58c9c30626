//! Which holders (containers, snapshots) use which images, so an image in use is never
//! removed or collected. Persisted, because containers outlive daemon restarts; not
//! fsynced: the snapshotter rebuilds its holders' leases from the snapshots it finds
//! when it opens ([`Leases::set_holders`]), so a power loss cannot leave them stale.

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
            // Torn by a power loss: the holders rebuild their leases.
            Ok(data) => serde_json::from_slice(&data).unwrap_or_else(|e| {
                tracing::warn!("{}: {e}: starting with no leases", path.display());
                BTreeMap::new()
            }),
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

    /// Makes the holders whose names start with `prefix` exactly `held`
    /// (holder → image); holders of other kinds are kept.
    pub fn set_holders(&mut self, prefix: &str, held: BTreeMap<String, Digest>) -> Result<()> {
        let mut fresh: BTreeMap<String, Digest> = std::mem::take(&mut self.by_holder)
            .into_iter()
            .filter(|(holder, _)| !holder.starts_with(prefix))
            .collect();
        fresh.extend(held);
        self.by_holder = fresh;
        self.save()
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
        atomic::write_file_unsynced(&self.path, &data)
    }
}
