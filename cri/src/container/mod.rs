//! Containers: the OCI runtime spec a CRI ContainerConfig becomes.

pub mod spec;
pub mod user;
