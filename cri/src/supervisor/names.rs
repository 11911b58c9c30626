// Names and numbers the daemon, `berth-supervisor` and `berth-supervisor-op`
// must agree on. Included by both sides (the supervisor binary has no standard
// library, so it cannot link the daemon's modules), so they cannot drift apart.

/// The socket in a supervisor's directory.
pub const SOCKET: &str = "supervisor.sock";
/// The protocol version every request carries.
pub const VERSION: u32 = 1;
/// The descriptor `berth-supervisor-op` writes its result to.
pub const RESULT_FD: i32 = 3;
/// A container's exit file in the supervisor's directory is `<id>` + this.
pub const EXIT_FILE_SUFFIX: &str = ".exit";
