//! Per-container root filesystems: an overlayfs of the image's layer dirs (shared by
//! every container of every image that has them) with a fresh upper dir, or a
//! read-only variant with no upper dir. Each snapshot leases its image, so the image
//! cannot be removed or collected while a container uses it.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

use super::atomic;
use super::content::remove_any;
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::store::ImageStore;

/// Snapshots lease their images as `snapshot/<id>`.
const HOLDER_PREFIX: &str = "snapshot/";

/// The kernel takes mount options in one page.
const MAX_MOUNT_DATA: usize = 4095;

/// How to mount a snapshot, in the shape of an OCI runtime `mounts` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// `overlay` or `bind`.
    pub fstype: String,
    pub source: PathBuf,
    pub options: Vec<String>,
}

impl Mount {
    /// Mounts it on `target` in the caller's mount namespace.
    pub fn mount_at(&self, target: &Path) -> Result<()> {
        let fail = |e: nix::Error| ImageError::Snapshot {
            id: target.display().to_string(),
            reason: format!("mount {} on {}: {e}", self.fstype, target.display()),
        };
        if self.fstype == "bind" {
            nix::mount::mount(
                Some(&self.source),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(fail)?;
            if self.options.iter().any(|o| o == "ro") {
                nix::mount::mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(fail)?;
            }
            return Ok(());
        }
        let data = self.options.join(",");
        nix::mount::mount(
            Some(&self.source),
            target,
            Some(self.fstype.as_str()),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(fail)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub image: Digest,
    pub readonly: bool,
    pub mount: Mount,
}

#[derive(Clone)]
pub struct Snapshotter {
    store: ImageStore,
    dir: PathBuf,
}

impl Snapshotter {
    pub fn new(store: ImageStore) -> Result<Snapshotter> {
        let dir = store.root().join("snapshots");
        fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
        let snapshotter = Snapshotter { store, dir };
        snapshotter.recover()?;
        Ok(snapshotter)
    }

    /// Snapshots are made without waiting for the disk (containerd's do
    /// not outlive a power loss either: their containers are gone then).
    /// What a power loss or a crash can leave is repaired here: half-made
    /// snapshots and ones whose record did not reach the disk are removed,
    /// and the image leases become exactly those of the snapshots found.
    fn recover(&self) -> Result<()> {
        let mut held = std::collections::BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(ImageError::io(&self.dir))? {
            let path = entry.map_err(ImageError::io(&self.dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if atomic::is_temp_name(name) {
                remove_any(&path)?;
                continue;
            }
            match self.get(name) {
                Ok(Some(snapshot)) => {
                    held.insert(Self::holder(&snapshot.id), snapshot.image);
                }
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        "snapshot {name}: its record did not survive (power loss?): removing it"
                    );
                    remove_any(&path)?;
                }
            }
        }
        self.store.set_holders(HOLDER_PREFIX, held)
    }

    fn holder(id: &str) -> String {
        format!("{HOLDER_PREFIX}{id}")
    }

    /// Creates the snapshot `id` (a container id) of an image (id, tag or digest).
    pub fn prepare(&self, id: &str, image: &str, readonly: bool) -> Result<Snapshot> {
        validate_id(id)?;
        let path = self.dir.join(id);
        if path.exists() {
            return Err(ImageError::Snapshot {
                id: id.into(),
                reason: "already exists".into(),
            });
        }
        let record = self.store.acquire(image, &Self::holder(id))?;
        let made = self.build(id, &path, &record, readonly);
        if made.is_err() {
            let _ = self.store.release(&Self::holder(id));
        }
        made
    }

    fn build(
        &self,
        id: &str,
        path: &Path,
        record: &super::record::ImageRecord,
        readonly: bool,
    ) -> Result<Snapshot> {
        let staged = atomic::temp_sibling(path);
        let result = (|| {
            fs::create_dir(&staged).map_err(ImageError::io(&staged))?;
            let mut lowers = self.store.short_layer_dirs(record)?;
            lowers.reverse(); // overlayfs lists the topmost lower dir first
            if lowers.is_empty() {
                // An image without layers still needs a lower dir for overlayfs.
                let empty = path.join("empty");
                fs::create_dir(staged.join("empty")).map_err(ImageError::io(&empty))?;
                lowers.push(empty);
            }
            let mount = if readonly && lowers.len() == 1 {
                Mount {
                    fstype: "bind".into(),
                    source: lowers.remove(0),
                    options: vec!["rbind".into(), "ro".into()],
                }
            } else {
                let lowerdir = lowers
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":");
                let mut options = vec![format!("lowerdir={lowerdir}")];
                if !readonly {
                    for sub in ["upper", "work"] {
                        fs::create_dir(staged.join(sub))
                            .map_err(ImageError::io(staged.join(sub)))?;
                    }
                    options.push(format!("upperdir={}", path.join("upper").display()));
                    options.push(format!("workdir={}", path.join("work").display()));
                }
                let len = options.join(",").len();
                if len > MAX_MOUNT_DATA {
                    return Err(ImageError::Snapshot {
                        id: id.into(),
                        reason: format!(
                            "{} layers need {len} bytes of overlay options, more than the kernel's {MAX_MOUNT_DATA}",
                            record.diff_ids.len()
                        ),
                    });
                }
                Mount {
                    fstype: "overlay".into(),
                    source: PathBuf::from("overlay"),
                    options,
                }
            };
            let snapshot = Snapshot {
                id: id.into(),
                image: record.id.clone(),
                readonly,
                mount,
            };
            let meta = serde_json::to_vec_pretty(&snapshot).map_err(|e| ImageError::Snapshot {
                id: id.into(),
                reason: e.to_string(),
            })?;
            // Not synced: see `recover`. Renaming the staged dir makes it appear whole.
            let record = staged.join("snapshot.json");
            fs::write(&record, &meta).map_err(ImageError::io(&record))?;
            fs::rename(&staged, path).map_err(ImageError::io(path))?;
            Ok(snapshot)
        })();
        if result.is_err() {
            let _ = remove_any(&staged);
        }
        result
    }

    pub fn get(&self, id: &str) -> Result<Option<Snapshot>> {
        validate_id(id)?;
        let meta = self.dir.join(id).join("snapshot.json");
        match fs::read(&meta) {
            Ok(data) => {
                serde_json::from_slice(&data)
                    .map(Some)
                    .map_err(|e| ImageError::CorruptRecord {
                        path: meta,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io(meta)(e)),
        }
    }

    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(ImageError::io(&self.dir))? {
            let entry = entry.map_err(ImageError::io(&self.dir))?;
            if let Some(id) = entry.file_name().to_str() {
                if !atomic::is_temp_name(id) {
                    out.extend(self.get(id)?);
                }
            }
        }
        Ok(out)
    }

    /// Deletes the snapshot's upper dir and releases its image. The caller unmounts first.
    pub fn remove(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let path = self.dir.join(id);
        if path.exists() {
            let doomed = atomic::temp_sibling(&path);
            fs::rename(&path, &doomed).map_err(ImageError::io(&path))?;
            remove_any(&doomed)?;
        }
        self.store.release(&Self::holder(id))
    }
}

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && !atomic::is_temp_name(id)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::Snapshot {
            id: id.into(),
            reason: "id must be 1-128 characters of [A-Za-z0-9._-]".into(),
        })
    }
}
