//! Crash-safe file writes: data goes to a temp file in the same directory, is synced,
//! and is renamed over the target, so readers see the old file or the whole new one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{ImageError, Result};

pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)
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
