//! Lease store on disk, in the reference plugin's layout so either plugin can
//! take over the other's leases:
//! `<dataDir>/<network>/<ip>` holds `<containerID>\r\n<ifname>`,
//! `last_reserved_ip.<rangeset index>` holds the last address handed out, and
//! the network directory itself is flock()ed while the store is open.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::types::{CniError, CniResult};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";

/// An exclusive, locked view of one network's leases.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// One lease found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub ip: IpAddr,
    pub container_id: String,
    pub ifname: String,
}

impl Store {
    /// Opens (creating if needed) and locks `<data_dir>/<network>`. Blocks
    /// while another plugin process holds the lock.
    pub fn open(data_dir: &Path, network: &str) -> CniResult<Self> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(|e| {
            CniError::io(
                format!("cannot create lease directory {}", dir.display()),
                e,
            )
        })?;
        let handle = File::open(&dir).map_err(|e| {
            CniError::io(format!("cannot open lease directory {}", dir.display()), e)
        })?;
        let lock = Flock::lock(handle, FlockArg::LockExclusive).map_err(|(_, e)| {
            CniError::io(format!("cannot lock lease directory {}", dir.display()), e)
        })?;
        Ok(Store { dir, _lock: lock })
    }

    fn lease_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Claims `ip` for the attachment; false if someone holds it already.
    pub fn reserve(
        &self,
        ip: IpAddr,
        container_id: &str,
        ifname: &str,
        range_set: usize,
    ) -> CniResult<bool> {
        let path = self.lease_path(ip);
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => {
                return Err(CniError::io(
                    format!("cannot create lease {}", path.display()),
                    e,
                ));
            }
        };
        let write = file.write_all(format!("{container_id}{LINE_BREAK}{ifname}").as_bytes());
        if let Err(e) = write {
            let _ = fs::remove_file(&path);
            return Err(CniError::io(
                format!("cannot write lease {}", path.display()),
                e,
            ));
        }
        let last = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        fs::write(&last, ip.to_string())
            .map_err(|e| CniError::io(format!("cannot write {}", last.display()), e))?;
        Ok(true)
    }

    pub fn last_reserved(&self, range_set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn release(&self, ip: IpAddr) -> CniResult<()> {
        let path = self.lease_path(ip);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(CniError::io(
                format!("cannot remove lease {}", path.display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// All leases in the directory.
    pub fn leases(&self) -> CniResult<Vec<Lease>> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| CniError::io(format!("cannot list {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let Ok(content) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut lines = content.lines().map(str::trim);
            let container_id = lines.next().unwrap_or_default().to_string();
            let ifname = lines.next().unwrap_or_default().to_string();
            out.push(Lease {
                ip,
                container_id,
                ifname,
            });
        }
        out.sort_by_key(|l| l.ip);
        Ok(out)
    }

    /// Leases of one attachment. Leases written by old plugins carry only the
    /// container id; they match any ifname.
    pub fn leases_of(&self, container_id: &str, ifname: &str) -> CniResult<Vec<Lease>> {
        Ok(self
            .leases()?
            .into_iter()
            .filter(|l| {
                l.container_id == container_id && (l.ifname.is_empty() || l.ifname == ifname)
            })
            .collect())
    }

    /// Releases every lease of the attachment; returns what was released.
    pub fn release_attachment(&self, container_id: &str, ifname: &str) -> CniResult<Vec<Lease>> {
        let leases = self.leases_of(container_id, ifname)?;
        for l in &leases {
            self.release(l.ip)?;
        }
        Ok(leases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_exclusive_and_release_by_attachment() {
        let tmp = std::env::temp_dir().join(format!("berth-cni-store-{}", std::process::id()));
        let store = Store::open(&tmp, "net").unwrap();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(store.reserve(ip, "c1", "eth0", 0).unwrap());
        assert!(!store.reserve(ip, "c2", "eth0", 0).unwrap());
        assert_eq!(
            fs::read_to_string(tmp.join("net/10.0.0.2")).unwrap(),
            "c1\r\neth0"
        );
        assert_eq!(store.last_reserved(0), Some(ip));
        assert!(store.release_attachment("c1", "eth1").unwrap().is_empty());
        assert_eq!(store.release_attachment("c1", "eth0").unwrap().len(), 1);
        assert!(store.leases().unwrap().is_empty());
        fs::remove_dir_all(tmp).unwrap();
    }
}
