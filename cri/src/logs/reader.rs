//! Reads CRI log files back (`crictl logs`/`kubectl logs`): tail, since and follow.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{LogEntry, LogError, LogStream, parse_line};

/// How often a followed file is checked for new lines and rotation (kubelet waits on
/// inotify; a short poll needs no watcher thread per follower).
const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only the last `n` lines of the file.
    pub tail: Option<usize>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this stream.
    pub stream: Option<LogStream>,
}

impl ReadOptions {
    fn wants(&self, entry: &LogEntry) -> bool {
        self.since.is_none_or(|since| entry.timestamp >= since)
            && self.stream.is_none_or(|s| s == entry.stream)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The newline-terminated lines at the start of `data` and how many bytes they span.
fn complete_lines(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let lines: Vec<&[u8]> = data
        .split_inclusive(|b| *b == b'\n')
        .take_while(|line| line.ends_with(b"\n"))
        .collect();
    let used = lines.iter().map(|l| l.len()).sum();
    (lines, used)
}

/// Parses the lines (the last `tail` of them, counted like kubelet counts file lines)
/// and keeps the wanted entries; malformed lines are skipped with a warning.
fn select(path: &Path, lines: &[&[u8]], options: &ReadOptions) -> Vec<LogEntry> {
    let skip = options
        .tail
        .map_or(0, |tail| lines.len().saturating_sub(tail));
    lines[skip..]
        .iter()
        .filter_map(|line| match parse_line(line) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping log line");
                None
            }
        })
        .filter(|entry| options.wants(entry))
        .collect()
}

/// The entries of the file as it is now.
pub async fn read(path: &Path, options: &ReadOptions) -> Result<Vec<LogEntry>, LogError> {
    let data = tokio::fs::read(path).await.map_err(io_error(path))?;
    Ok(select(path, &complete_lines(&data).0, options))
}

/// Sends the selected entries, then every new one as it is written, following the path
/// across rotations, until `stop` is cancelled or the receiver goes away.
pub async fn follow(
    path: &Path,
    options: &ReadOptions,
    entries: mpsc::Sender<LogEntry>,
    stop: CancellationToken,
) -> Result<(), LogError> {
    let mut file = tokio::fs::File::open(path).await.map_err(io_error(path))?;
    let mut inode = file.metadata().await.map_err(io_error(path))?.ino();
    let mut pending = Vec::new();
    file.read_to_end(&mut pending)
        .await
        .map_err(io_error(path))?;
    let (lines, used) = complete_lines(&pending);
    let first = select(path, &lines, options);
    pending.drain(..used);
    for entry in first {
        if entries.send(entry).await.is_err() {
            return Ok(());
        }
    }
    let live = ReadOptions {
        tail: None,
        ..options.clone()
    };
    loop {
        let read = file
            .read_to_end(&mut pending)
            .await
            .map_err(io_error(path))?;
        if read > 0 {
            let (lines, used) = complete_lines(&pending);
            let new = select(path, &lines, &live);
            pending.drain(..used);
            for entry in new {
                if entries.send(entry).await.is_err() {
                    return Ok(());
                }
            }
            continue;
        }
        // Nothing new: has the file been rotated away and a fresh one created?
        if let Ok(current) = tokio::fs::metadata(path).await {
            if current.ino() != inode {
                file = tokio::fs::File::open(path).await.map_err(io_error(path))?;
                inode = file.metadata().await.map_err(io_error(path))?.ino();
                file.seek(std::io::SeekFrom::Start(0))
                    .await
                    .map_err(io_error(path))?;
                pending.clear();
                continue;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = entries.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::io::Write;

    fn line(seconds: i64, stream: LogStream, message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        LogEntry {
            timestamp: Utc.timestamp_opt(seconds, 0).unwrap(),
            stream,
            partial: false,
            message: message.as_bytes().to_vec(),
        }
        .encode(&mut out);
        out
    }

    /// Appends one complete entry, as the supervisor writes it.
    fn append(path: &std::path::Path, stream: LogStream, message: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(&line(Utc::now().timestamp(), stream, message))
            .unwrap();
    }

    fn messages(entries: &[LogEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8(e.message.clone()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn tail_since_and_stream_select_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut content = Vec::new();
        for (t, stream, m) in [
            (10, LogStream::Stdout, "a"),
            (20, LogStream::Stderr, "b"),
            (30, LogStream::Stdout, "c"),
        ] {
            content.extend(line(t, stream, m));
        }
        content.extend_from_slice(b"garbage line\n2024-01-01T00:00:00Z stdout F incomplete");
        std::fs::write(&path, content).unwrap();

        let all = read(&path, &ReadOptions::default()).await.unwrap();
        assert_eq!(messages(&all), ["a", "b", "c"]);
        let tail = ReadOptions {
            tail: Some(3),
            ..Default::default()
        };
        assert_eq!(
            messages(&read(&path, &tail).await.unwrap()),
            ["b", "c"],
            "the garbage line counts as a line"
        );
        let since = ReadOptions {
            since: Some(Utc.timestamp_opt(20, 0).unwrap()),
            ..Default::default()
        };
        assert_eq!(messages(&read(&path, &since).await.unwrap()), ["b", "c"]);
        let stdout = ReadOptions {
            stream: Some(LogStream::Stdout),
            ..Default::default()
        };
        assert_eq!(messages(&read(&path, &stdout).await.unwrap()), ["a", "c"]);
    }

    #[tokio::test]
    async fn follow_sees_new_lines_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        append(&path, LogStream::Stdout, "one");
        append(&path, LogStream::Stdout, "two");

        let (tx, mut rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let options = ReadOptions {
            tail: Some(1),
            ..Default::default()
        };
        let follower = {
            let (path, stop) = (path.clone(), stop.clone());
            tokio::spawn(async move { follow(&path, &options, tx, stop).await })
        };
        assert_eq!(rx.recv().await.unwrap().message, b"two");
        append(&path, LogStream::Stderr, "three");
        let next = rx.recv().await.unwrap();
        assert_eq!(
            (next.stream, next.message),
            (LogStream::Stderr, b"three".to_vec())
        );

        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        append(&path, LogStream::Stdout, "four");
        assert_eq!(rx.recv().await.unwrap().message, b"four");

        stop.cancel();
        follower.await.unwrap().unwrap();
    }
}
