//! `ImageStore`: the single owner of images on a node (pull, list, status, remove,
//! leases, usage, garbage collection). Cheap to clone; all clones share one store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use oci_client::Reference;

use super::content::ContentStore;
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::hosts::HostsConfig;
use super::lease::Leases;
use super::media::Platform;
use super::record::{ImageRecord, RecordStore, normalize_reference};
use super::registry::Credentials;

/// Where berth-cri keeps images unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/berth/cri";

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// containerd-style registry hosts dir (`<dir>/<host>/hosts.toml`).
    pub hosts_dir: Option<PathBuf>,
    /// Layers downloaded (and unpacked) at once per pull; containerd's default is 3.
    pub max_concurrent_downloads: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            hosts_dir: None,
            max_concurrent_downloads: 3,
        }
    }
}

/// Disk use of the store, for CRI ImageFsInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

impl FsUsage {
    /// Bytes (allocated blocks) and inodes of the files below `root`, hardlinked
    /// files counted once; symlinks are not followed.
    pub fn of_tree(root: &Path) -> Result<FsUsage> {
        let mut seen = HashSet::new();
        let mut usage = FsUsage {
            mountpoint: root.to_path_buf(),
            used_bytes: 0,
            inodes_used: 0,
        };
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                // Removed concurrently (a gc or a finished unpack): nothing to count.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ImageError::io(dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(ImageError::io(&dir))?;
                let Ok(meta) = entry.metadata() else { continue };
                if seen.insert((meta.dev(), meta.ino())) {
                    usage.used_bytes += meta.blocks() * 512;
                    usage.inodes_used += 1;
                }
                if meta.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        Ok(usage)
    }
}

/// What a garbage collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub layers_removed: usize,
}

type SharedPull = Shared<BoxFuture<'static, Result<ImageRecord, Arc<ImageError>>>>;

#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub content: ContentStore,
    records: RecordStore,
    images: Mutex<BTreeMap<Digest, ImageRecord>>,
    leases: Mutex<Leases>,
    pub hosts: HostsConfig,
    pub options: StoreOptions,
    inflight: Mutex<HashMap<String, SharedPull>>,
    key_locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Held shared by pulls and imports, exclusively by gc: content a pull has fetched
    /// but not yet recorded is never collected.
    pub gc_lock: tokio::sync::RwLock<()>,
}

/// A poisoned lock only means another thread panicked mid-update of in-memory maps
/// whose on-disk state is written atomically; carrying on is safe.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ImageStore {
    pub fn open(root: impl AsRef<Path>, options: StoreOptions) -> Result<ImageStore> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(ImageError::io(&root))?;
        let content = ContentStore::open(&root)?;
        let (records, images) = RecordStore::open(&root)?;
        let leases = Leases::open(&root)?;
        Ok(ImageStore {
            inner: Arc::new(Inner {
                hosts: HostsConfig::new(options.hosts_dir.clone()),
                root,
                content,
                records,
                images: Mutex::new(images),
                leases: Mutex::new(leases),
                options,
                inflight: Mutex::new(HashMap::new()),
                key_locks: Mutex::new(HashMap::new()),
                gc_lock: tokio::sync::RwLock::new(()),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Pulls an image for `platform` (the host's when None). Concurrent pulls of the same
    /// reference with the same credentials share one download, which runs to completion
    /// even if callers go away. (Credentials are part of the key so a caller without a
    /// pull secret never rides on another's authorised pull.)
    pub async fn pull(
        &self,
        reference: &str,
        credentials: &Credentials,
        platform: Option<&Platform>,
    ) -> Result<ImageRecord> {
        let platform = platform.cloned().unwrap_or_else(Platform::host);
        let parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| {
            ImageError::InvalidReference {
                reference: reference.to_string(),
                reason: e.to_string(),
            }
        })?;
        let key = format!(
            "{}|{platform}|{}",
            parsed.whole(),
            credentials.fingerprint()
        );
        let shared = {
            let mut inflight = lock(&self.inner.inflight);
            match inflight.get(&key) {
                Some(shared) => shared.clone(),
                None => {
                    let inner = self.inner.clone();
                    let credentials = credentials.clone();
                    let task_key = key.clone();
                    let image = parsed.whole();
                    let task = tokio::spawn(async move {
                        let result = inner.pull_uncached(parsed, &credentials, &platform).await;
                        lock(&inner.inflight).remove(&task_key);
                        result
                    });
                    let shared = async move {
                        match task.await {
                            Ok(result) => result.map_err(Arc::new),
                            Err(join) => Err(Arc::new(ImageError::Registry {
                                image,
                                endpoint: "-".into(),
                                reason: format!("pull task failed: {join}"),
                                status: None,
                            })),
                        }
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, shared.clone());
                    shared
                }
            }
        };
        shared
            .await
            .map_err(|e| Arc::try_unwrap(e).unwrap_or_else(ImageError::Shared))
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        lock(&self.inner.images).values().cloned().collect()
    }

    /// Finds an image by id, tag or digest reference.
    pub fn status(&self, query: &str) -> Option<ImageRecord> {
        self.inner.find(query)
    }

    /// Removes an image (all its names). Refused while a holder leases it. Its content
    /// stays until `gc`.
    pub fn remove(&self, query: &str) -> Result<()> {
        let record = self
            .inner
            .find(query)
            .ok_or_else(|| ImageError::NotFound(query.to_string()))?;
        let leases = lock(&self.inner.leases);
        let holders = leases.holders(&record.id);
        if !holders.is_empty() {
            return Err(ImageError::InUse {
                image: query.to_string(),
                holders: holders.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        let mut images = lock(&self.inner.images);
        self.inner.records.delete(&record.id)?;
        images.remove(&record.id);
        Ok(())
    }

    /// Marks `holder` (e.g. a container id) as using the image; returns the image.
    pub fn acquire(&self, query: &str, holder: &str) -> Result<ImageRecord> {
        let record = self
            .inner
            .find(query)
            .ok_or_else(|| ImageError::NotFound(query.to_string()))?;
        lock(&self.inner.leases).acquire(&record.id, holder)?;
        Ok(record)
    }

    pub fn release(&self, holder: &str) -> Result<()> {
        lock(&self.inner.leases).release(holder)
    }

    /// Replaces the leases of the holders named `prefix…` with `held`
    /// (holder → image id), as found on disk by their owner.
    pub fn set_holders(&self, prefix: &str, held: BTreeMap<String, Digest>) -> Result<()> {
        lock(&self.inner.leases).set_holders(prefix, held)
    }

    /// The unpacked layer directories of an image, lowest first.
    pub fn layer_dirs(&self, record: &ImageRecord) -> Result<Vec<PathBuf>> {
        record
            .diff_ids
            .iter()
            .map(|d| {
                let path = self.inner.content.layer_path(d);
                if path.is_dir() {
                    Ok(path)
                } else {
                    Err(ImageError::Blob {
                        image: record.id.to_string(),
                        digest: d.to_string(),
                        reason: "unpacked layer is missing from the store".into(),
                    })
                }
            })
            .collect()
    }

    /// Short paths to the layer directories, lowest first (for overlay mount options).
    pub(crate) fn short_layer_dirs(&self, record: &ImageRecord) -> Result<Vec<PathBuf>> {
        self.layer_dirs(record)?;
        record
            .diff_ids
            .iter()
            .map(|d| self.inner.content.short_layer_path(d))
            .collect()
    }

    /// The image's config (entrypoint, env, user...), as the runtime needs it.
    pub fn config(&self, record: &ImageRecord) -> Result<oci_spec::image::ImageConfiguration> {
        let data = self.inner.content.read_blob(&record.id)?;
        serde_json::from_slice(&data).map_err(|e| ImageError::Blob {
            image: record.id.to_string(),
            digest: record.id.to_string(),
            reason: format!("image config: {e}"),
        })
    }

    /// Bytes and inodes the store uses on disk (hardlinked files counted once).
    pub fn fs_usage(&self) -> Result<FsUsage> {
        FsUsage::of_tree(&self.inner.root)
    }

    /// Removes blobs and layers no image record refers to, and staging leftovers.
    pub async fn gc(&self) -> Result<GcReport> {
        let _exclusive = self.inner.gc_lock.write().await;
        let (blobs, layers) = {
            let images = lock(&self.inner.images);
            let mut blobs = BTreeSet::new();
            let mut layers = BTreeSet::new();
            for r in images.values() {
                for desc in [&r.target, &r.manifest, &r.config]
                    .into_iter()
                    .chain(&r.layers)
                {
                    blobs.insert(desc.digest.clone());
                }
                layers.extend(r.diff_ids.iter().cloned());
            }
            (blobs, layers)
        };
        let content = &self.inner.content;
        let mut report = GcReport::default();
        for blob in content.blob_digests()? {
            if !blobs.contains(blob.as_str()) {
                content.remove_blob(&blob)?;
                report.blobs_removed += 1;
            }
        }
        for layer in content.layer_diff_ids()? {
            if !layers.contains(&layer) {
                content.remove_layer(&layer)?;
                report.layers_removed += 1;
            }
        }
        content.prune_links()?;
        content.clear_staging()?;
        Ok(report)
    }
}

impl Inner {
    pub fn find(&self, query: &str) -> Option<ImageRecord> {
        let images = lock(&self.images);
        images.values().find(|r| r.matches(query)).cloned()
    }

    /// A per-key async lock (layer unpacks by diff id), dropped when nobody holds it.
    pub async fn lock_key(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = lock(&self.key_locks);
            locks.retain(|_, w| w.strong_count() > 0);
            match locks.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key.to_string(), Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }

    /// Saves a complete image under `names` (tags and digest references). A tag moving
    /// here from another image is taken off that one, which stays listed under its digest
    /// name (crictl shows it with tag `<none>`, as with containerd); one left with no
    /// name at all and no holder is dropped (its content goes at the next gc).
    pub fn commit(&self, mut record: ImageRecord, names: &[String]) -> Result<ImageRecord> {
        let leases = lock(&self.leases);
        let mut images = lock(&self.images);
        if let Some(existing) = images.get(&record.id) {
            record.repo_tags = existing.repo_tags.clone();
            record.repo_digests = existing.repo_digests.clone();
        }
        for name in names {
            let list = if name.contains('@') {
                &mut record.repo_digests
            } else {
                &mut record.repo_tags
            };
            if !list.contains(name) {
                list.push(name.clone());
            }
        }
        self.records.save(&record)?;
        let mut emptied = Vec::new();
        for other in images.values_mut().filter(|r| r.id != record.id) {
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| !names.contains(t));
            if other.repo_tags.len() != before {
                if other.repo_tags.is_empty()
                    && other.repo_digests.is_empty()
                    && leases.holders(&other.id).is_empty()
                {
                    emptied.push(other.id.clone());
                } else {
                    self.records.save(other)?;
                }
            }
        }
        for id in emptied {
            self.records.delete(&id)?;
            images.remove(&id);
        }
        images.insert(record.id.clone(), record.clone());
        Ok(record)
    }
}

/// The names a pull of `reference` records: its tag (or `latest`) unless pulled by digest
/// only, and the digest reference of what it resolved to.
pub(crate) fn names_for(reference: &Reference, target: &Digest) -> Vec<String> {
    let name = format!("{}/{}", reference.registry(), reference.repository());
    let mut names = Vec::new();
    if reference.digest().is_none() {
        if let Some(tag) = normalize_reference(&reference.whole()) {
            names.push(tag);
        }
    }
    names.push(format!("{name}@{target}"));
    names
}
