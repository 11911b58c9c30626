//! Crash-safe file replacement: a reader sees the old or the new content,
//! never a torn write.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::StoreError;

pub fn write(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let io = |what: &str| {
        let what = what.to_string();
        let path = path.to_path_buf();
        move |source| StoreError::Io { what, path, source }
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(io("creating"))?;
    file.write_all(data).map_err(io("writing"))?;
    file.sync_all().map_err(io("syncing"))?;
    fs::rename(&tmp, path).map_err(io("renaming into place"))?;
    if let Some(dir) = path.parent() {
        // The rename itself must be durable too.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing directory"))?;
    }
    Ok(())
}
