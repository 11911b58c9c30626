//! A store of records of one kind: kept in memory, persisted as
//! `<dir>/<id>.json` with atomic replacement, reloaded on open, with unique
//! names and id-prefix lookup.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::atomic::{self, Durability};
use super::{NameIndex, StoreError};

/// What a store keeps.
pub trait Record: Clone + Serialize + DeserializeOwned {
    /// The kind named in errors ("sandbox", "container").
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn name(&self) -> &str;
}

/// Owner of all records of one kind.
#[derive(Debug)]
pub struct Store<T> {
    dir: PathBuf,
    records: Mutex<BTreeMap<String, T>>,
    names: NameIndex,
}

impl<T: Record> Store<T> {
    /// Opens the store at `dir`, loading every record found there.
    pub fn open(dir: &Path) -> Result<Store<T>, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            what: format!("creating {} store", T::KIND),
            path: dir.to_path_buf(),
            source,
        })?;
        let store = Store {
            dir: dir.to_path_buf(),
            records: Mutex::default(),
            names: NameIndex::default(),
        };
        let entries = fs::read_dir(dir).map_err(|source| StoreError::Io {
            what: format!("listing {} store", T::KIND),
            path: dir.to_path_buf(),
            source,
        })?;
        let mut records = store.lock();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = fs::read(&path).map_err(|source| StoreError::Io {
                what: format!("reading {} record", T::KIND),
                path: path.clone(),
                source,
            })?;
            let record: T = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            store.names.reserve(record.name(), record.id())?;
            records.insert(record.id().to_string(), record);
        }
        drop(records);
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, T>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn persist(&self, record: &T, durability: Durability) -> Result<(), StoreError> {
        self.persist_job(record, durability)()
    }

    /// The persisting of `record` as a job that may run on another thread:
    /// encoded now, written when called.
    fn persist_job(
        &self,
        record: &T,
        durability: Durability,
    ) -> impl FnOnce() -> Result<(), StoreError> + Send + 'static {
        let path = self.path(record.id());
        let data = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        });
        move || atomic::write(&path, &data?, durability)
    }

    /// Reserves a sandbox name for `id` before anything is made for it.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), StoreError> {
        Ok(self.names.reserve(name, id)?)
    }

    pub fn release_name(&self, name: &str) {
        self.names.release(name);
    }

    /// Adds or replaces a record, on disk first.
    pub fn put(&self, record: T) -> Result<(), StoreError> {
        self.persist(&record, Durability::PowerLoss)?;
        self.lock().insert(record.id().to_string(), record);
        Ok(())
    }

    /// The slow half of [`Store::put`] on its own: the writing of a new
    /// record to disk, fsynced, without adding it, as a job for a blocking
    /// thread (`spawn_blocking`) so that the wait for the disk overlaps
    /// other work. [`Store::insert_written`] then adds it; a record written
    /// but never added is dropped with [`Store::delete`].
    pub fn write_new(
        &self,
        record: &T,
    ) -> impl FnOnce() -> Result<(), StoreError> + Send + 'static {
        self.persist_job(record, Durability::PowerLoss)
    }

    /// Adds a record [`Store::write_new`] wrote; what changed since (such
    /// as the pid of a process now running) is persisted for a restart of
    /// the daemon only, as [`Store::update_running`] does.
    pub fn insert_written(&self, record: T) -> Result<(), StoreError> {
        self.persist(&record, Durability::Restart)?;
        self.lock().insert(record.id().to_string(), record);
        Ok(())
    }

    /// Changes a record with `change` and persists it.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut T)) -> Result<T, StoreError> {
        self.change(id, change, Durability::PowerLoss)
    }

    /// Like [`Store::update`] for a change that only describes processes
    /// now running (a container started): persisted for a restart of the
    /// daemon but not fsynced, since a power loss ends those processes and
    /// recovery then records them exited whichever version it reads.
    pub fn update_running(&self, id: &str, change: impl FnOnce(&mut T)) -> Result<T, StoreError> {
        self.change(id, change, Durability::Restart)
    }

    fn change(
        &self,
        id: &str,
        change: impl FnOnce(&mut T),
        durability: Durability,
    ) -> Result<T, StoreError> {
        let mut records = self.lock();
        let record = records.get_mut(id).ok_or_else(|| StoreError::NotFound {
            kind: T::KIND,
            id: id.to_string(),
        })?;
        let mut changed = record.clone();
        change(&mut changed);
        self.persist(&changed, durability)?;
        *record = changed.clone();
        Ok(changed)
    }

    /// The record whose id is `id` or starts with it (unambiguously).
    pub fn get(&self, id: &str) -> Result<T, StoreError> {
        let records = self.lock();
        if let Some(record) = records.get(id) {
            return Ok(record.clone());
        }
        let mut matches = records
            .range(id.to_string()..)
            .take_while(|(k, _)| k.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some((_, record)), None) if !id.is_empty() => Ok(record.clone()),
            (Some(_), Some(_)) => Err(StoreError::Ambiguous {
                kind: T::KIND,
                prefix: id.to_string(),
            }),
            _ => Err(StoreError::NotFound {
                kind: T::KIND,
                id: id.to_string(),
            }),
        }
    }

    pub fn list(&self) -> Vec<T> {
        self.lock().values().cloned().collect()
    }

    /// Deletes a record and frees its name.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    what: format!("removing {} record", T::KIND),
                    path,
                    source,
                });
            }
        }
        if let Some(record) = self.lock().remove(id) {
            self.names.release(record.name());
        }
        Ok(())
    }
}
