//! Pod sandboxes: their network namespace, pause process, generated files
//! and sysctls.

pub mod cgroup;
pub mod files;
pub mod netns;
pub mod pause;
pub mod process;
pub mod sysctl;
