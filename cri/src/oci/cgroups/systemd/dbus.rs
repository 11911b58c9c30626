//! The systemd Manager D-Bus calls the driver needs (blocking zbus on the system bus).

use std::time::Duration;

use zbus::blocking::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use super::properties::{PropValue, Property};
use crate::oci::cgroups::CgroupError;
use crate::oci::cgroups::fsutil::wait_until;

const DESTINATION: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
/// How long systemd may take to start or stop a unit.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Systemd {
    conn: Connection,
}

impl Systemd {
    pub fn connect(unit: &str) -> Result<Self, CgroupError> {
        let conn =
            Connection::system().map_err(|e| err(unit, "connecting to the system bus", e))?;
        Ok(Systemd { conn })
    }

    /// Starts a transient unit and waits until systemd reports it active.
    pub fn start_transient_unit(&self, unit: &str, props: &[Property]) -> Result<(), CgroupError> {
        let props: Vec<(&str, Value<'_>)> = props.iter().map(|(n, v)| (*n, to_value(v))).collect();
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        self.conn
            .call_method(
                Some(DESTINATION),
                PATH,
                Some(MANAGER),
                "StartTransientUnit",
                &(unit, "replace", props, aux),
            )
            .map_err(|e| err(unit, "StartTransientUnit", e))?;
        wait_until(
            JOB_TIMEOUT,
            &format!("systemd unit {unit} to become active"),
            || match self.active_state(unit)?.as_deref() {
                Some("active") => Ok(true),
                Some("failed") => Err(CgroupError::Systemd {
                    unit: unit.into(),
                    reason: "unit failed to start".into(),
                }),
                _ => Ok(false),
            },
        )
    }

    /// Changes properties of a running unit (runtime only, not persisted).
    pub fn set_unit_properties(&self, unit: &str, props: &[Property]) -> Result<(), CgroupError> {
        if props.is_empty() {
            return Ok(());
        }
        let props: Vec<(&str, Value<'_>)> = props.iter().map(|(n, v)| (*n, to_value(v))).collect();
        self.conn
            .call_method(
                Some(DESTINATION),
                PATH,
                Some(MANAGER),
                "SetUnitProperties",
                &(unit, true, props),
            )
            .map_err(|e| err(unit, "SetUnitProperties", e))?;
        Ok(())
    }

    /// Stops the unit and waits until it is gone; a unit that does not exist is fine.
    pub fn stop_unit(&self, unit: &str) -> Result<(), CgroupError> {
        match self.conn.call_method(
            Some(DESTINATION),
            PATH,
            Some(MANAGER),
            "StopUnit",
            &(unit, "replace"),
        ) {
            Ok(_) => {}
            Err(e) if is_no_such_unit(&e) => return Ok(()),
            Err(e) => return Err(err(unit, "StopUnit", e)),
        }
        wait_until(JOB_TIMEOUT, &format!("systemd unit {unit} to stop"), || {
            Ok(matches!(
                self.active_state(unit)?.as_deref(),
                None | Some("inactive") | Some("failed")
            ))
        })?;
        // A failed unit stays loaded (and its name taken) until its failure is reset.
        let _ = self.conn.call_method(
            Some(DESTINATION),
            PATH,
            Some(MANAGER),
            "ResetFailedUnit",
            &(unit,),
        );
        Ok(())
    }

    /// The unit's ActiveState, None when systemd has no such unit loaded.
    fn active_state(&self, unit: &str) -> Result<Option<String>, CgroupError> {
        let reply =
            match self
                .conn
                .call_method(Some(DESTINATION), PATH, Some(MANAGER), "GetUnit", &(unit,))
            {
                Ok(reply) => reply,
                Err(e) if is_no_such_unit(&e) => return Ok(None),
                Err(e) => return Err(err(unit, "GetUnit", e)),
            };
        let path: OwnedObjectPath = reply
            .body()
            .deserialize()
            .map_err(|e| err(unit, "GetUnit reply", e))?;
        let reply = self
            .conn
            .call_method(
                Some(DESTINATION),
                path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.systemd1.Unit", "ActiveState"),
            )
            .map_err(|e| err(unit, "reading ActiveState", e))?;
        let value: OwnedValue = reply
            .body()
            .deserialize()
            .map_err(|e| err(unit, "ActiveState reply", e))?;
        let state = String::try_from(value).map_err(|e| err(unit, "ActiveState value", e))?;
        Ok(Some(state))
    }
}

fn to_value(v: &PropValue) -> Value<'_> {
    match v {
        PropValue::Bool(b) => Value::from(*b),
        PropValue::U64(n) => Value::from(*n),
        PropValue::Str(s) => Value::from(s.as_str()),
        PropValue::U32s(list) => Value::from(list.clone()),
        PropValue::Bytes(bytes) => Value::from(bytes.clone()),
    }
}

fn is_no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _) if name.as_str() == NO_SUCH_UNIT)
}

fn err(unit: &str, what: &str, e: impl std::fmt::Display) -> CgroupError {
    CgroupError::Systemd {
        unit: unit.to_string(),
        reason: format!("{what}: {e}"),
    }
}
