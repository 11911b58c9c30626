//! The content store on disk: blobs by digest and unpacked layers by diff id.
//!
//! Layout under the store root:
//! - `blobs/sha256/<hex>`: manifests, indexes, configs and compressed layers, exactly as
//!   fetched (kept for export and for sharing across images).
//! - `layers/<diff-id hex>/`: one unpacked layer, an overlayfs lower dir. Keyed by diff
//!   id, not chain id: with overlayfs a layer's directory does not depend on what lies
//!   below it, so every image carrying the same layer shares one directory.
//! - `l/<16 hex>`: short symlinks to layer dirs, for overlay mount options, which the
//!   kernel limits to one page: with them ~100 layers fit instead of ~40.
//! - `staging/`: downloads and unpacks in progress; emptied on open, so a crash leaves
//!   nothing that a record could point at.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::atomic;
use super::digest::{Digest, HashingWriter};
use super::error::{ImageError, Result};
use super::media::Compression;
use super::unpack::{self, Unpacked};

#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<ContentStore> {
        let store = ContentStore {
            root: root.to_path_buf(),
        };
        for dir in [
            store.blob_dir(),
            store.layer_dir(),
            store.link_dir(),
            store.staging_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
        }
        store.clear_staging()?;
        Ok(store)
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    fn layer_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn link_dir(&self) -> PathBuf {
        self.root.join("l")
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Removes leftovers of interrupted downloads and unpacks.
    pub fn clear_staging(&self) -> Result<()> {
        let dir = self.staging_dir();
        for entry in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let path = entry.map_err(ImageError::io(&dir))?.path();
            remove_any(&path)?;
        }
        Ok(())
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(ImageError::io(path))
    }

    /// Stores small content (manifests, configs) after checking it matches `digest`.
    pub fn put_blob(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let actual = Digest::of_bytes(data);
        if &actual != digest {
            return Err(ImageError::Blob {
                image: "-".into(),
                digest: digest.to_string(),
                reason: format!("content hashes to {actual}"),
            });
        }
        atomic::write_file(&self.blob_path(digest), data)
    }

    /// A fresh staging path; removed again when the guard drops uncommitted (a failed or
    /// cancelled download).
    pub fn stage(&self, label: &str) -> Staged {
        Staged {
            path: atomic::temp_sibling(&self.staging_dir().join(label)),
        }
    }

    /// Moves a verified download from staging into the store.
    pub fn commit_blob(&self, staged: Staged, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        fs::rename(&staged.path, &dest).map_err(ImageError::io(&dest))?;
        atomic::sync_parent(&dest).map_err(ImageError::io(&dest))
    }

    /// Copies a stream into the store, computing its digest (for imports, where the
    /// archive names are not trusted to be digests).
    pub fn ingest(&self, mut reader: impl Read) -> Result<(Digest, u64)> {
        let staged = self.stage("ingest");
        let file = fs::File::create(&staged.path).map_err(ImageError::io(&staged.path))?;
        let mut writer = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
        std::io::copy(&mut reader, &mut writer).map_err(ImageError::io(&staged.path))?;
        let (buffered, digest, size) = writer.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| ImageError::io(&staged.path)(e.into_error()))?;
        file.sync_all().map_err(ImageError::io(&staged.path))?;
        if !self.has_blob(&digest) {
            self.commit_blob(staged, &digest)?;
        }
        Ok((digest, size))
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir().join(diff_id.hex())
    }

    /// A short path to a layer dir (a symlink under `l/`), made on first use. Falls back
    /// to the full path should the short name already lead elsewhere.
    pub fn short_layer_path(&self, diff_id: &Digest) -> Result<PathBuf> {
        let link = self.link_dir().join(&diff_id.hex()[..16]);
        let target = Path::new("../layers").join(diff_id.hex());
        match fs::read_link(&link) {
            Ok(existing) if existing == target => return Ok(link),
            Ok(_) => return Ok(self.layer_path(diff_id)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io(link)(e)),
        }
        let staged = atomic::temp_sibling(&link);
        std::os::unix::fs::symlink(&target, &staged).map_err(ImageError::io(&staged))?;
        // rename keeps a concurrent creator's identical link instead of failing.
        fs::rename(&staged, &link).map_err(ImageError::io(&link))?;
        Ok(link)
    }

    /// Removes short links whose layer is gone.
    pub fn prune_links(&self) -> Result<()> {
        let dir = self.link_dir();
        for entry in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let path = entry.map_err(ImageError::io(&dir))?.path();
            if !path.exists() {
                remove_any(&path)?;
            }
        }
        Ok(())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// Unpacks a layer blob into `layers/<diff_id>`, checking the uncompressed stream
    /// against `diff_id`. Blocking: run it off the async runtime.
    pub fn unpack_blob(
        &self,
        image: &str,
        blob: &Digest,
        compression: Compression,
        diff_id: &Digest,
    ) -> Result<()> {
        let blob_path = self.blob_path(blob);
        let staged = self.stage(diff_id.hex());
        fs::create_dir(&staged.path).map_err(ImageError::io(&staged.path))?;
        (|| {
            let file = fs::File::open(&blob_path).map_err(ImageError::io(&blob_path))?;
            let Unpacked {
                diff_id: actual, ..
            } = unpack::unpack_layer(file, compression, &staged.path).map_err(|source| {
                ImageError::Unpack {
                    image: image.to_string(),
                    digest: blob.to_string(),
                    source,
                }
            })?;
            if &actual != diff_id {
                return Err(ImageError::Blob {
                    image: image.to_string(),
                    digest: blob.to_string(),
                    reason: format!(
                        "uncompressed layer hashes to {actual}, the image config says {diff_id}"
                    ),
                });
            }
            let dest = self.layer_path(diff_id);
            fs::rename(&staged.path, &dest).map_err(ImageError::io(&dest))?;
            atomic::sync_parent(&dest).map_err(ImageError::io(&dest))
        })()
    }

    pub fn blob_digests(&self) -> Result<Vec<Digest>> {
        list_digests(&self.blob_dir())
    }

    pub fn layer_diff_ids(&self) -> Result<Vec<Digest>> {
        list_digests(&self.layer_dir())
    }

    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        remove_any(&self.blob_path(digest))
    }

    /// Removes a layer dir: renamed into staging first, so a crash mid-removal never leaves
    /// a half-deleted layer under its real name.
    pub fn remove_layer(&self, diff_id: &Digest) -> Result<()> {
        let path = self.layer_path(diff_id);
        let doomed = self.stage("removed-layer");
        fs::rename(&path, &doomed.path).map_err(ImageError::io(&path))?;
        remove_any(&doomed.path)
    }
}

/// A path in staging that is deleted on drop unless it was renamed into the store.
pub struct Staged {
    pub path: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the path no longer exists and this is a no-op.
        let _ = remove_any(&self.path);
    }
}

fn list_digests(dir: &Path) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(ImageError::io(dir))? {
        let entry = entry.map_err(ImageError::io(dir))?;
        if let Some(name) = entry.file_name().to_str() {
            if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

pub(crate) fn remove_any(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(ImageError::io(path))
}
