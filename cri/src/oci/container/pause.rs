//! `pause` / `resume`: freezing the container's cgroup.

use crate::oci::error::{OciError, Result};
use crate::oci::state::{StateStore, Status};

pub fn pause(store: &StateStore, id: &str) -> Result<()> {
    let state = store.load(id)?;
    match state.status(&store.dir(id)) {
        Status::Running | Status::Created => Ok(state.cgroup_manager()?.freeze()?),
        Status::Paused => Err(OciError::InvalidState {
            id: id.into(),
            reason: "container already paused".into(),
        }),
        _ => Err(OciError::InvalidState {
            id: id.into(),
            reason: "container not running".into(),
        }),
    }
}

pub fn resume(store: &StateStore, id: &str) -> Result<()> {
    let state = store.load(id)?;
    match state.status(&store.dir(id)) {
        Status::Paused => Ok(state.cgroup_manager()?.thaw()?),
        _ => Err(OciError::InvalidState {
            id: id.into(),
            reason: "container not paused".into(),
        }),
    }
}
