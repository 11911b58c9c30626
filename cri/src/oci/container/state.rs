//! `state`, `list`, `ps`: reading containers without changing them.

use crate::oci::error::Result;
use crate::oci::state::{ContainerState, OciState, StateStore};

pub fn state(store: &StateStore, id: &str) -> Result<OciState> {
    let container = store.load(id)?;
    let status = container.status(&store.dir(id));
    Ok(container.oci_state(status))
}

/// Every container under the root, with its current state.
pub fn list(store: &StateStore) -> Result<Vec<(ContainerState, OciState)>> {
    let mut out = Vec::new();
    for id in store.list()? {
        // A container deleted concurrently is simply not listed.
        if let Ok(container) = store.load(&id) {
            let status = container.status(&store.dir(&id));
            let oci = container.oci_state(status);
            out.push((container, oci));
        }
    }
    Ok(out)
}

/// Pids of the container's processes (from its cgroup).
pub fn pids(store: &StateStore, id: &str) -> Result<Vec<i32>> {
    let container = store.load(id)?;
    Ok(container.cgroup_manager()?.pids()?)
}
