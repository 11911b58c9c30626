//! File I/O on cgroup control files. Written by hand rather than through cgroups-rs:
//! we need the spec field in every error, the exact write ordering upstream uses
//! (memsw vs limit, quota vs period), v1/v2/hybrid on one host and creation that can
//! be undone completely — all simpler as a few plain reads and writes.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CgroupError;

/// Writes `value` to `dir/file`; a refusal is reported against the spec `field`.
pub fn write_field(dir: &Path, file: &str, value: &str, field: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| CgroupError::Apply {
        field: field.to_string(),
        path,
        value: value.to_string(),
        source,
    })
}

pub fn read_trimmed(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| CgroupError::io(path, e))
}

/// Reads a file holding one number; `max` (v2 for "no limit") reads as `u64::MAX`.
pub fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read_trimmed(path)?;
    if text == "max" {
        return Ok(u64::MAX);
    }
    text.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text,
    })
}

/// Like [`read_u64`] but a missing file (controller or feature absent) is `None`.
pub fn read_u64_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    match read_u64(path) {
        Ok(v) => Ok(Some(v)),
        Err(CgroupError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `key value` lines (memory.stat, cpu.stat, memory.events ...) as pairs.
pub fn read_keyed(path: &Path) -> Result<Vec<(String, u64)>, CgroupError> {
    let text = std::fs::read_to_string(path).map_err(|e| CgroupError::io(path, e))?;
    Ok(parse_keyed(&text))
}

pub fn parse_keyed(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

pub fn keyed_value(pairs: &[(String, u64)], key: &str) -> u64 {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

/// Every process in the cgroup at `dir` and in the cgroups below it (a container may
/// make sub-cgroups of its own). A cgroup that does not exist has none.
pub fn cgroup_pids(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let procs = dir.join("cgroup.procs");
    let text = match std::fs::read_to_string(&procs) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CgroupError::io(procs, e)),
    };
    let mut pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let entries = std::fs::read_dir(dir).map_err(|e| CgroupError::io(dir, e))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&entry.path())?);
        }
    }
    Ok(pids)
}

/// Directories made by one `create()`, removed again (deepest first) if it fails.
#[derive(Debug, Default)]
pub struct CreatedDirs {
    dirs: Vec<PathBuf>,
    keep: bool,
}

impl CreatedDirs {
    /// Creates `path` and any missing parents, remembering the ones made here.
    pub fn create_all(&mut self, path: &Path) -> Result<(), CgroupError> {
        let mut missing = Vec::new();
        let mut cursor = Some(path);
        while let Some(dir) = cursor {
            if dir.exists() {
                break;
            }
            missing.push(dir.to_path_buf());
            cursor = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            match std::fs::create_dir(&dir) {
                Ok(()) => self.dirs.push(dir),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CgroupError::io(dir, e)),
            }
        }
        Ok(())
    }

    /// The directories newly made, parents first.
    #[cfg(test)]
    pub fn created(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Creation succeeded: keep everything.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for dir in self.dirs.iter().rev() {
            if let Err(e) = remove_cgroup_dir(dir, Duration::from_secs(2)) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot undo cgroup creation");
            }
        }
    }
}

/// Removes a cgroup directory and any child cgroups below it. rmdir fails with EBUSY
/// while tasks are still exiting, so it is retried until `timeout`. Gone already is fine.
pub fn remove_cgroup_dir(dir: &Path, timeout: Duration) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CgroupError::io(dir, e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_dir(&entry.path(), timeout)?;
        }
    }
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(CgroupError::io(dir, e)),
        }
    }
}

/// Polls `condition` until it holds or `timeout` passes (kernel state changes such as
/// freezing have no notification we can wait on portably).
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<(), CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::Timeout {
                what: what.to_string(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse_to_pairs() {
        let pairs = parse_keyed("cache 4096\nrss 8192\nbogus\n");
        assert_eq!(keyed_value(&pairs, "rss"), 8192);
        assert_eq!(keyed_value(&pairs, "cache"), 4096);
        assert_eq!(keyed_value(&pairs, "absent"), 0);
    }

    #[test]
    fn failed_creation_removes_only_new_dirs() {
        let base = std::env::temp_dir().join(format!("berth-created-dirs-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        {
            let mut created = CreatedDirs::default();
            created.create_all(&base.join("a/b/c")).unwrap();
            assert_eq!(created.created().len(), 3);
            assert!(base.join("a/b/c").is_dir());
        }
        assert!(!base.join("a").exists());
        assert!(base.is_dir());
        std::fs::remove_dir(&base).unwrap();
    }
}
