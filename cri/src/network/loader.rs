//! Choosing the network from the conf dir like containerd: files ending in
//! `.conf`, `.conflist` or `.json`, in lexical order, the first valid one
//! wins; invalid ones before it are skipped with the reason.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::config::NetworkConfigList;

const EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// A configuration file that was passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedConfig {
    pub path: PathBuf,
    pub reason: String,
}

/// The outcome of reading the conf dir.
#[derive(Debug, Clone)]
pub struct ConfDirScan {
    pub selected: Option<(PathBuf, NetworkConfigList)>,
    pub skipped: Vec<SkippedConfig>,
}

/// What the conf dir looked like: names, sizes and mtimes of candidate
/// files. A change means the configuration must be read again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirFingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

fn candidate_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = listing
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
                && p.is_file()
        })
        .collect();
    files.sort();
    files
}

pub fn fingerprint(dir: &Path) -> DirFingerprint {
    DirFingerprint(
        candidate_files(dir)
            .into_iter()
            .map(|p| {
                let meta = std::fs::metadata(&p).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                let mtime = meta.and_then(|m| m.modified().ok());
                (p, len, mtime)
            })
            .collect(),
    )
}

pub fn scan_conf_dir(dir: &Path) -> ConfDirScan {
    let mut skipped = Vec::new();
    for path in candidate_files(dir) {
        match NetworkConfigList::from_file(&path) {
            Ok(list) => {
                return ConfDirScan {
                    selected: Some((path, list)),
                    skipped,
                };
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping CNI network config");
                skipped.push(SkippedConfig {
                    path,
                    reason: e.to_string(),
                });
            }
        }
    }
    ConfDirScan {
        selected: None,
        skipped,
    }
}
