//! A layer: an ordered list of file-system changes (files, directories,
//! symlinks, hardlinks, whiteouts) that can be applied to a directory or
//! serialised as a tar archive with OCI whiteout conventions.

use anyhow::Context;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One change in a layer. Paths are relative to the root (no leading `/`).
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// A hard link at `path` to the earlier entry `target` of the same layer.
    Hardlink {
        path: String,
        target: String,
    },
    /// Deletes `path` from the layers below (`.wh.<name>` in a tar).
    Whiteout {
        path: String,
    },
    /// Hides everything the layers below have in directory `path`
    /// (`.wh..wh..opq` in a tar).
    OpaqueDir {
        path: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. }
            | Entry::File { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::Hardlink { path, .. }
            | Entry::Whiteout { path }
            | Entry::OpaqueDir { path } => path,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layer {
    entries: Vec<Entry>,
}

fn relative(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

impl Layer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(Entry::Dir {
            path: relative(path),
            mode,
            uid: 0,
            gid: 0,
        })
    }

    pub fn file(self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.file_owned(path, contents, mode, 0, 0)
    }

    pub fn file_owned(
        self,
        path: &str,
        contents: impl Into<Vec<u8>>,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Self {
        let contents = contents.into();
        self.entry(Entry::File {
            path: relative(path),
            contents,
            mode,
            uid,
            gid,
        })
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::Symlink {
            path: relative(path),
            target: target.to_string(),
        })
    }

    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::Hardlink {
            path: relative(path),
            target: relative(target),
        })
    }

    pub fn whiteout(self, path: &str) -> Self {
        self.entry(Entry::Whiteout {
            path: relative(path),
        })
    }

    pub fn opaque_dir(self, path: &str) -> Self {
        self.entry(Entry::OpaqueDir {
            path: relative(path),
        })
    }

    pub fn entry(mut self, entry: Entry) -> Self {
        self.entries.push(entry);
        self
    }

    /// Appends `other`'s entries after this layer's.
    pub fn extend(mut self, other: Layer) -> Self {
        self.entries.extend(other.entries);
        self
    }

    /// Applies the changes to `root` as a runtime applies layers when it
    /// unpacks an image: later entries win, whiteouts delete, parents of
    /// entries are created as needed (0755, root-owned).
    pub fn apply_to(&self, root: &Path) -> anyhow::Result<()> {
        for entry in &self.entries {
            apply_entry(root, entry)
                .with_context(|| format!("applying {:?} to {}", entry.path(), root.display()))?;
        }
        Ok(())
    }

    /// The layer as an uncompressed tar. Deterministic: the same entries give
    /// the same bytes (mtime 0, numeric owners), so digests are stable.
    pub fn to_tar(&self) -> anyhow::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append_tar_entry(&mut builder, entry)
                .with_context(|| format!("adding {:?} to the layer tar", entry.path()))?;
        }
        builder.into_inner().context("finishing the layer tar")
    }
}

fn create_parent(target: &Path) -> anyhow::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(())
}

fn remove_existing(target: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(target)?,
        Ok(_) => std::fs::remove_file(target)?,
        Err(_) => {}
    }
    Ok(())
}

/// Root-owned entries are chowned only when running as root, so that unit
/// tests can build trees unprivileged.
fn set_owner(target: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() || (uid, gid) != (0, 0) {
        std::os::unix::fs::lchown(target, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn apply_entry(root: &Path, entry: &Entry) -> anyhow::Result<()> {
    let target: PathBuf = root.join(entry.path());
    match entry {
        Entry::Dir { mode, uid, gid, .. } => {
            if !target.is_dir() {
                remove_existing(&target)?;
            }
            std::fs::create_dir_all(&target)?;
            set_owner(&target, *uid, *gid)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
        }
        Entry::File {
            contents,
            mode,
            uid,
            gid,
            ..
        } => {
            create_parent(&target)?;
            remove_existing(&target)?;
            std::fs::write(&target, contents)?;
            set_owner(&target, *uid, *gid)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
        }
        Entry::Symlink {
            target: link_target,
            ..
        } => {
            create_parent(&target)?;
            remove_existing(&target)?;
            std::os::unix::fs::symlink(link_target, &target)?;
        }
        Entry::Hardlink {
            target: original, ..
        } => {
            create_parent(&target)?;
            remove_existing(&target)?;
            std::fs::hard_link(root.join(original), &target)?;
        }
        Entry::Whiteout { .. } => remove_existing(&target)?,
        Entry::OpaqueDir { .. } => {
            remove_existing(&target)?;
            std::fs::create_dir_all(&target)?;
        }
    }
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid.into());
    header.set_gid(gid.into());
    header.set_mtime(0);
    header.set_size(size);
    header
}

/// The tar name of the whiteout marker for `path`: `dir/.wh.name`.
fn whiteout_name(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.wh.{name}"),
        None => format!(".wh.{path}"),
    }
}

fn append_tar_entry(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> anyhow::Result<()> {
    match entry {
        Entry::Dir {
            path,
            mode,
            uid,
            gid,
        } => {
            let mut h = header(tar::EntryType::Directory, *mode, *uid, *gid, 0);
            builder.append_data(&mut h, format!("{path}/"), std::io::empty())?;
        }
        Entry::File {
            path,
            contents,
            mode,
            uid,
            gid,
        } => {
            let size = contents.len() as u64;
            let mut h = header(tar::EntryType::Regular, *mode, *uid, *gid, size);
            builder.append_data(&mut h, path, contents.as_slice())?;
        }
        Entry::Symlink { path, target } => {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
            builder.append_link(&mut h, path, target)?;
        }
        Entry::Hardlink { path, target } => {
            let mut h = header(tar::EntryType::Link, 0o644, 0, 0, 0);
            builder.append_link(&mut h, path, target)?;
        }
        Entry::Whiteout { path } => {
            let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, 0);
            builder.append_data(&mut h, whiteout_name(path), std::io::empty())?;
        }
        Entry::OpaqueDir { path } => {
            let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, 0);
            builder.append_data(&mut h, format!("{path}/.wh..wh..opq"), std::io::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tar_entries(bytes: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let kind = entry.header().entry_type();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (name, kind, data)
            })
            .collect()
    }

    #[test]
    fn tar_uses_oci_whiteout_names() {
        let layer = Layer::new()
            .file("/etc/motd", "hi", 0o644)
            .whiteout("/etc/old")
            .whiteout("top")
            .opaque_dir("/var/cache");
        let names: Vec<String> = tar_entries(&layer.to_tar().unwrap())
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "etc/motd",
                "etc/.wh.old",
                ".wh.top",
                "var/cache/.wh..wh..opq"
            ]
        );
    }

    #[test]
    fn tar_keeps_links_and_contents() {
        let layer = Layer::new()
            .file("a", "data", 0o600)
            .hardlink("b", "a")
            .symlink("c", "/a")
            .dir("d", 0o700);
        let entries = tar_entries(&layer.to_tar().unwrap());
        assert_eq!(
            entries[0],
            ("a".into(), tar::EntryType::Regular, b"data".to_vec())
        );
        assert_eq!(entries[1].1, tar::EntryType::Link);
        assert_eq!(entries[2].1, tar::EntryType::Symlink);
        assert_eq!(entries[3].0, "d/");
    }

    #[test]
    fn tar_is_deterministic() {
        let layer = Layer::new().file("x", "1", 0o644).symlink("y", "x");
        assert_eq!(layer.to_tar().unwrap(), layer.to_tar().unwrap());
    }

    #[test]
    fn apply_writes_links_and_honours_whiteouts() {
        let dir = crate::tempdir::TempDir::new("berth-layer").unwrap();
        Layer::new()
            .file("etc/a", "A", 0o640)
            .hardlink("etc/b", "etc/a")
            .symlink("etc/c", "a")
            .file("etc/gone", "x", 0o644)
            .file("var/cache/old", "x", 0o644)
            .apply_to(dir.path())
            .unwrap();
        Layer::new()
            .whiteout("etc/gone")
            .opaque_dir("var/cache")
            .apply_to(dir.path())
            .unwrap();

        let meta = std::fs::metadata(dir.join("etc/a")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(dir.join("etc/b")).unwrap().ino(),
            meta.ino()
        );
        assert_eq!(
            std::fs::read_link(dir.join("etc/c")).unwrap(),
            Path::new("a")
        );
        assert!(!dir.join("etc/gone").exists());
        assert!(dir.join("var/cache").is_dir());
        assert!(!dir.join("var/cache/old").exists());
    }
}
