//! The processes the runtime forks: the container's init and exec'd processes,
//! the fork primitives and the channel they talk to the runtime over.

pub mod channel;
pub mod child;
pub mod fork;
pub mod setup;
