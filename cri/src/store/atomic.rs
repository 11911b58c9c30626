//! Crash-safe file replacement: a reader sees the old or the new content,
//! never a torn write.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;

/// What a write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A power loss: the file and the rename are fsynced.
    PowerLoss,
    /// A restart of the daemon only: the page cache keeps the file, and
    /// the rename alone makes the replacement atomic.
    Restart,
}

pub fn write(path: &Path, data: &[u8], durability: Durability) -> Result<(), StoreError> {
    let io = |what: &str| {
        let what = what.to_string();
        let path = path.to_path_buf();
        move |source| StoreError::Io { what, path, source }
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp).map_err(io("creating"))?;
    file.write_all(data).map_err(io("writing"))?;
    if durability == Durability::PowerLoss {
        file.sync_all().map_err(io("syncing"))?;
    }
    fs::rename(&tmp, path).map_err(io("renaming into place"))?;
    if let (Durability::PowerLoss, Some(dir)) = (durability, path.parent()) {
        // The rename itself must be durable too.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing directory"))?;
    }
    Ok(())
}
