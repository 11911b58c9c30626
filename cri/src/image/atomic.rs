//! Crash-safe file writes: data goes to a temp file in the same directory, is synced,
//! and is renamed over the target, so readers see the old file or the whole new one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{ImageError, Result};

pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, true)
}

/// Like [`write_file`] without waiting for the disk: atomic for readers and
/// across a restart of the daemon (the page cache keeps it), but a power
/// loss may leave the old content or none. Only for records that opening
/// the store rebuilds from others.
pub fn write_file_unsynced(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, false)
}

fn replace(path: &Path, data: &[u8], sync: bool) -> Result<()> {
    let tmp = temp_sibling(path);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if sync {
            sync_parent(path)?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ImageError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    })
}

/// A unique name next to `path` for staging its new content.
pub fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Makes a rename durable: the directory entry is part of the parent's data.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// True for names `temp_sibling` makes: leftovers of a crashed write.
pub fn is_temp_name(name: &str) -> bool {
    name.contains(".tmp-")
}
