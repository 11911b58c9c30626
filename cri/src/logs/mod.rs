//! Container logs in the CRI format kubelet reads (`kubectl logs`) and rotates:
//! one `<RFC3339Nano> <stdout|stderr> <F|P> <message>` line per output line, `P` for
//! the pieces of a line cut at the maximum line size (or ended by the stream without a
//! newline), `F` for the piece that completes it.

mod format;
mod reader;

use std::path::PathBuf;

pub use format::{LogEntry, LogStream, format_timestamp, parse_line};
pub use reader::{ReadOptions, follow, read};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("container log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed CRI log line: {0}")]
    Malformed(String),
}
