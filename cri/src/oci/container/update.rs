//! `update`: new resource limits for a running container, applied to its
//! cgroup and remembered in its state (so a later `update` or reader of the
//! state sees the limits in force, as with runc).

use oci_spec::runtime::LinuxResources;

use crate::oci::error::{OciError, Result};
use crate::oci::state::{StateStore, Status};

/// Merges `changes` into the container's recorded resources, applies the
/// result to its cgroup and saves it. Returns the resources now in force.
pub fn update(store: &StateStore, id: &str, changes: &LinuxResources) -> Result<LinuxResources> {
    let mut state = store.load(id)?;
    if state.status(&store.dir(id)) == Status::Stopped {
        return Err(OciError::InvalidState {
            id: id.into(),
            reason: "cannot update a stopped container".into(),
        });
    }
    let merged = merge(state.resources.as_ref(), changes)?;
    // Only what was asked for is written to the cgroup: the rest is in force.
    state.cgroup_manager()?.update(changes)?;
    state.resources = Some(merged.clone());
    store.save(&state)?;
    Ok(merged)
}

/// Field-wise merge: every value set in `changes` replaces the recorded one,
/// nested objects are merged, lists are replaced whole.
fn merge(recorded: Option<&LinuxResources>, changes: &LinuxResources) -> Result<LinuxResources> {
    let encode = |r: &LinuxResources| {
        serde_json::to_value(r).map_err(|e| crate::oci::error::invalid("resources", e.to_string()))
    };
    let mut base = match recorded {
        Some(r) => encode(r)?,
        None => serde_json::Value::Object(Default::default()),
    };
    merge_json(&mut base, encode(changes)?);
    serde_json::from_value(base).map_err(|e| crate::oci::error::invalid("resources", e.to_string()))
}

fn merge_json(base: &mut serde_json::Value, changes: serde_json::Value) {
    match (base, changes) {
        (serde_json::Value::Object(base), serde_json::Value::Object(changes)) => {
            for (key, value) in changes {
                if value.is_null() {
                    continue;
                }
                match base.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_json(existing, value)
                    }
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, changes) => *base = changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_override_field_by_field() {
        let recorded: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":100,"swap":200},"cpu":{"shares":10,"period":1000},"pids":{"limit":5}}"#,
        )
        .unwrap();
        let changes: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":150},"cpu":{"quota":500}}"#).unwrap();
        let merged = merge(Some(&recorded), &changes).unwrap();
        let memory = merged.memory().unwrap();
        assert_eq!((memory.limit(), memory.swap()), (Some(150), Some(200)));
        let cpu = merged.cpu().clone().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.period(), cpu.quota()),
            (Some(10), Some(1000), Some(500))
        );
        assert_eq!(merged.pids().unwrap().limit(), 5);
    }

    #[test]
    fn nothing_recorded_takes_the_changes() {
        let changes: LinuxResources = serde_json::from_str(r#"{"pids":{"limit":7}}"#).unwrap();
        assert_eq!(merge(None, &changes).unwrap().pids().unwrap().limit(), 7);
    }
}
