//! A container's CRI log file as the supervisor writes it: one
//! `<RFC3339Nano> <stdout|stderr> <F|P> <message>` line per output line, `P` for
//! the pieces of a line cut at the maximum line size or ended by the stream
//! without a newline (the format `berth_cri::logs` reads back).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::sys::{self, Fd};

/// containerd's `max_container_log_line_size` default.
pub const DEFAULT_MAX_LINE_SIZE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One container's log file, written by its stdout and stderr.
pub struct LogWriter {
    path: String,
    file: Fd,
    max_line_size: usize,
}

fn open_append(path: &str) -> Result<Fd, String> {
    sys::open(
        path.as_bytes(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        0o640,
    )
    .map_err(|e| format!("container log {path}: {e}"))
}

impl LogWriter {
    /// Opens (creating) the log file for appending; lines longer than
    /// `max_line_size` bytes are cut into partial entries (0 = never cut).
    pub fn open(path: &str, max_line_size: usize) -> Result<Self, String> {
        Ok(LogWriter {
            path: path.into(),
            file: open_append(path)?,
            max_line_size,
        })
    }

    /// Opens the path again (ReopenContainerLog): after the kubelet renamed the
    /// file for rotation, new lines go to a fresh file at the original path.
    pub fn reopen(&mut self) -> Result<(), String> {
        self.file = open_append(&self.path)?;
        Ok(())
    }

    fn write_entry(&self, stream: LogStream, partial: bool, message: &[u8]) -> Result<(), String> {
        let mut line = Vec::with_capacity(message.len() + 48);
        line.extend_from_slice(timestamp(sys::now_nanos()).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_str().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(message);
        line.push(b'\n');
        // One write per line keeps lines of the two streams from interleaving.
        sys::write_all(self.file.raw(), &line)
            .map_err(|e| format!("container log {}: {e}", self.path))
    }
}

/// RFC 3339 in UTC with nanoseconds, always 9 digits and `Z` (containerd's layout).
pub fn timestamp(nanos: i64) -> String {
    let seconds = nanos.div_euclid(1_000_000_000);
    let fraction = nanos.rem_euclid(1_000_000_000);
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Days since 1970-01-01 to the proleptic Gregorian calendar, in 400-year eras
    // that start on March 1st (so the leap day ends a year).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let mut out = String::with_capacity(30);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:09}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    out
}

/// One stream's bytes on their way into the log: complete lines are written as
/// they arrive, the start of an unfinished one waits for the rest.
pub struct LineBuffer {
    stream: LogStream,
    pending: Vec<u8>,
}

impl LineBuffer {
    pub fn new(stream: LogStream) -> Self {
        LineBuffer {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn stream(&self) -> LogStream {
        self.stream
    }

    /// Writes every line `data` completes; lines over the writer's maximum size
    /// go out in partial pieces.
    pub fn feed(&mut self, writer: &LogWriter, data: &[u8]) -> Result<(), String> {
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
    pub fn finish(&mut self, writer: &LogWriter) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rest = core::mem::take(&mut self.pending);
        writer.write_entry(self.stream, true, &rest)
    }
}

#[cfg(test)]
mod tests {
    use berth_cri::logs::{LogStream as ReadStream, parse_line};

    use super::*;

    fn entries(path: &std::path::Path) -> Vec<(ReadStream, bool, std::string::String)> {
        std::fs::read(path)
            .unwrap()
            .split_inclusive(|b| *b == b'\n')
            .map(|line| parse_line(line).unwrap())
            .map(|e| {
                (
                    e.stream,
                    e.partial,
                    std::string::String::from_utf8(e.message).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            timestamp(1_700_000_000_120_000_000),
            "2023-11-14T22:13:20.120000000Z"
        );
        // A leap day, and agreement with chrono until nanoseconds overflow (2262).
        assert_eq!(
            timestamp(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        for seconds in (0..9_000_000_000i64).step_by(7_777_777) {
            let expected = chrono::DateTime::from_timestamp(seconds, 5)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            assert_eq!(timestamp(seconds * 1_000_000_000 + 5), expected);
        }
    }

    #[test]
    fn lines_are_tagged_full_or_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let writer = LogWriter::open(path.to_str().unwrap(), 8).unwrap();
        let mut out = LineBuffer::new(LogStream::Stdout);
        let mut err = LineBuffer::new(LogStream::Stderr);
        out.feed(&writer, b"short\nexac").unwrap();
        err.feed(&writer, b"to stderr\n").unwrap();
        out.feed(&writer, b"tly8\n0123456789abcdefXY\n\ntail")
            .unwrap();
        out.finish(&writer).unwrap();
        let want = [
            (ReadStream::Stdout, false, "short"),
            (ReadStream::Stderr, true, "to stder"),
            (ReadStream::Stderr, false, "r"),
            (ReadStream::Stdout, false, "exactly8"),
            (ReadStream::Stdout, true, "01234567"),
            (ReadStream::Stdout, true, "89abcdef"),
            (ReadStream::Stdout, false, "XY"),
            (ReadStream::Stdout, false, ""),
            (ReadStream::Stdout, true, "tail"),
        ];
        assert_eq!(entries(&path), want.map(|(s, p, m)| (s, p, m.to_owned())));
    }

    #[test]
    fn reopen_continues_in_a_fresh_file_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut writer = LogWriter::open(path.to_str().unwrap(), DEFAULT_MAX_LINE_SIZE).unwrap();
        let mut lines = LineBuffer::new(LogStream::Stdout);
        lines.feed(&writer, b"before\n").unwrap();
        let rotated = dir.path().join("0.log.20240101-000000");
        std::fs::rename(&path, &rotated).unwrap();
        writer.reopen().unwrap();
        lines.feed(&writer, b"after\n").unwrap();
        assert_eq!(entries(&rotated)[0].2, "before");
        assert_eq!(
            entries(&path),
            [(ReadStream::Stdout, false, "after".to_owned())]
        );
    }

    #[test]
    fn a_missing_directory_is_reported_with_the_path() {
        let err = LogWriter::open("/nonexistent-berth-dir/0.log", 0)
            .err()
            .unwrap();
        assert!(err.contains("/nonexistent-berth-dir/0.log"), "{err}");
    }
}
