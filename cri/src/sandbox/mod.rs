//! Pod sandboxes: their network namespace and pause process.

pub mod netns;
pub mod pause;
