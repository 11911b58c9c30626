//! Writes a container's stdout and stderr into its CRI log file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{LogEntry, LogError, LogStream};

/// containerd's `max_container_log_line_size` default.
pub const DEFAULT_MAX_LINE_SIZE: usize = 16 * 1024;

/// One container's log file, shared by its stdout and stderr copiers. Cloning shares it.
#[derive(Clone)]
pub struct LogWriter {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    max_line_size: usize,
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| LogError::Io {
            path: path.to_owned(),
            source,
        })
}

impl LogWriter {
    /// Opens (creating) the log file for appending; lines longer than `max_line_size`
    /// bytes are cut into partial entries (0 = never cut).
    pub fn open(path: impl Into<PathBuf>, max_line_size: usize) -> Result<Self, LogError> {
        let path = path.into();
        let file = open_append(&path)?;
        Ok(Self {
            path,
            file: Arc::new(Mutex::new(file)),
            max_line_size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again (ReopenContainerLog): after kubelet renamed the file for
    /// rotation, new lines go to a fresh file at the original path.
    pub fn reopen(&self) -> Result<(), LogError> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn write_entry(
        &self,
        stream: LogStream,
        partial: bool,
        message: &[u8],
    ) -> Result<(), LogError> {
        let entry = LogEntry {
            timestamp: Utc::now(),
            stream,
            partial,
            message: message.to_vec(),
        };
        let mut line = Vec::with_capacity(message.len() + 48);
        entry.encode(&mut line);
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line keeps lines of the two streams from interleaving. The write is
        // an append into the page cache, done inline: handing every line to a blocking
        // thread would cost more than it saves.
        file.write_all(&line).map_err(|source| LogError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Copies `source` into the log until it ends, one entry per line.
    pub async fn copy_stream<R>(&self, stream: LogStream, mut source: R) -> Result<(), LogError>
    where
        R: AsyncRead + Unpin,
    {
        let mut lines = LineBuffer::new(stream);
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            let n = source
                .read(&mut chunk)
                .await
                .map_err(|source| LogError::Source {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            lines.feed(self, &chunk[..n])?;
        }
        lines.finish(self)
    }
}

/// One stream's bytes on their way into the log: complete lines are written as they
/// arrive, the start of an unfinished one waits for the rest. Synchronous, for callers
/// without an async runtime (the pod supervisor's poll loop).
#[derive(Debug)]
pub struct LineBuffer {
    stream: LogStream,
    pending: Vec<u8>,
}

impl LineBuffer {
    pub fn new(stream: LogStream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn stream(&self) -> LogStream {
        self.stream
    }

    /// Writes every line `data` completes; lines over the writer's maximum size go out
    /// in partial pieces.
    pub fn feed(&mut self, writer: &LogWriter, data: &[u8]) -> Result<(), LogError> {
        self.pending.extend_from_slice(data);
        let max = writer.max_line_size;
        let mut start = 0;
        let result = loop {
            let rest = &self.pending[start..];
            match rest.iter().position(|b| *b == b'\n') {
                Some(end) if max == 0 || end <= max => {
                    if let Err(e) = writer.write_entry(self.stream, false, &rest[..end]) {
                        break Err(e);
                    }
                    start += end + 1;
                }
                _ if max > 0 && rest.len() > max => {
                    if let Err(e) = writer.write_entry(self.stream, true, &rest[..max]) {
                        break Err(e);
                    }
                    start += max;
                }
                _ => break Ok(()),
            }
        };
        self.pending.drain(..start);
        result
    }

    /// The stream ended: what is left is the unterminated end of a line.
    pub fn finish(&mut self, writer: &LogWriter) -> Result<(), LogError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rest = std::mem::take(&mut self.pending);
        writer.write_entry(self.stream, true, &rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::parse_line;

    fn entries(path: &Path) -> Vec<LogEntry> {
        std::fs::read(path)
            .unwrap()
            .split_inclusive(|b| *b == b'\n')
            .map(|line| parse_line(line).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn lines_are_tagged_full_or_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let writer = LogWriter::open(&path, 8).unwrap();
        writer
            .copy_stream(
                LogStream::Stdout,
                &b"short\nexactly8\n0123456789abcdefXY\n\ntail"[..],
            )
            .await
            .unwrap();
        let got: Vec<(bool, String)> = entries(&path)
            .into_iter()
            .map(|e| (e.partial, String::from_utf8(e.message).unwrap()))
            .collect();
        let want = [
            (false, "short"),
            (false, "exactly8"),
            (true, "01234567"),
            (true, "89abcdef"),
            (false, "XY"),
            (false, ""),
            (true, "tail"),
        ];
        assert_eq!(got, want.map(|(p, m)| (p, m.to_owned())));
    }

    #[tokio::test]
    async fn both_streams_share_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let writer = LogWriter::open(&path, DEFAULT_MAX_LINE_SIZE).unwrap();
        let (out, err) = tokio::join!(
            writer.copy_stream(LogStream::Stdout, &b"to stdout\n"[..]),
            writer.copy_stream(LogStream::Stderr, &b"to stderr\n"[..])
        );
        out.unwrap();
        err.unwrap();
        let mut got: Vec<(LogStream, Vec<u8>)> = entries(&path)
            .into_iter()
            .map(|e| (e.stream, e.message))
            .collect();
        got.sort_by_key(|(s, _)| s.as_str());
        assert_eq!(
            got,
            [
                (LogStream::Stderr, b"to stderr".to_vec()),
                (LogStream::Stdout, b"to stdout".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn reopen_continues_in_a_fresh_file_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let writer = LogWriter::open(&path, DEFAULT_MAX_LINE_SIZE).unwrap();
        writer
            .copy_stream(LogStream::Stdout, &b"before\n"[..])
            .await
            .unwrap();
        let rotated = dir.path().join("0.log.20240101-000000");
        std::fs::rename(&path, &rotated).unwrap();
        writer.reopen().unwrap();
        writer
            .copy_stream(LogStream::Stdout, &b"after\n"[..])
            .await
            .unwrap();
        assert_eq!(entries(&rotated)[0].message, b"before");
        assert_eq!(entries(&path).len(), 1);
        assert_eq!(entries(&path)[0].message, b"after");
    }

    #[test]
    fn a_missing_directory_is_reported_with_the_path() {
        let err = LogWriter::open("/nonexistent-berth-dir/0.log", 0)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("/nonexistent-berth-dir/0.log"),
            "{err}"
        );
    }
}
