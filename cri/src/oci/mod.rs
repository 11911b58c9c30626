//! The built-in OCI runtime library: cgroups and seccomp (the runtime core adds its own modules).
pub mod cgroups;
pub mod seccomp;
