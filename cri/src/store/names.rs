//! Name reservation: one object per name, as containerd's name index.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("name {name:?} is reserved for {id:?}")]
pub struct NameReserved {
    pub name: String,
    pub id: String,
}

#[derive(Debug, Default)]
pub struct NameIndex {
    names: Mutex<HashMap<String, String>>,
}

impl NameIndex {
    /// Reserves `name` for `id`; reserving it again for the same id is a no-op.
    pub fn reserve(&self, name: &str, id: &str) -> Result<(), NameReserved> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        match names.get(name) {
            Some(owner) if owner != id => Err(NameReserved {
                name: name.to_string(),
                id: owner.clone(),
            }),
            _ => {
                names.insert(name.to_string(), id.to_string());
                Ok(())
            }
        }
    }

    pub fn release(&self, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_belongs_to_one_id_until_released() {
        let index = NameIndex::default();
        index.reserve("pod_ns_uid_0", "a").unwrap();
        index.reserve("pod_ns_uid_0", "a").unwrap();
        let err = index.reserve("pod_ns_uid_0", "b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "name \"pod_ns_uid_0\" is reserved for \"a\""
        );
        index.release("pod_ns_uid_0");
        index.reserve("pod_ns_uid_0", "b").unwrap();
    }
}
