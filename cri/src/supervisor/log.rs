//! CRI container log lines (`<RFC3339Nano> <stream> <F|P> <text>`), split at
//! newlines; a line longer than [`MAX_LINE`] is cut into partial (P) pieces.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAX_LINE: usize = 16 * 1024;

pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
}

impl LogFile {
    pub fn open(path: &Path) -> Self {
        let mut log = LogFile {
            path: path.to_path_buf(),
            file: None,
        };
        log.reopen();
        log
    }

    /// Opens the path again (it may have been renamed away by rotation).
    pub fn reopen(&mut self) -> bool {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.file.is_some()
    }

    fn line(&mut self, stream: &str, tag: &str, text: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut out = Vec::with_capacity(text.len() + 48);
        out.extend_from_slice(time.as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.as_bytes());
        out.push(b' ');
        out.extend_from_slice(tag.as_bytes());
        out.push(b' ');
        out.extend_from_slice(text);
        out.push(b'\n');
        // A full disk must not stop the container: the line is lost.
        let _ = file.write_all(&out);
    }
}

/// Buffers one stream's bytes until a newline completes a line.
pub struct LineSplitter {
    pub stream: &'static str,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: &'static str) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn feed(&mut self, data: &[u8], log: &mut LogFile) {
        self.pending.extend_from_slice(data);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            log.line(self.stream, "F", &line[..line.len() - 1]);
        }
        while self.pending.len() >= MAX_LINE {
            let piece: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            log.line(self.stream, "P", &piece);
        }
    }

    /// At end of stream what is left is a last, unterminated line.
    pub fn finish(&mut self, log: &mut LogFile) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            log.line(self.stream, "F", &rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_full_and_overlong_ones_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut log = LogFile::open(&path);
        let mut out = LineSplitter::new("stdout");
        out.feed(b"hel", &mut log);
        out.feed(b"lo\nwor", &mut log);
        out.feed(&vec![b'x'; MAX_LINE], &mut log);
        out.finish(&mut log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" stdout F hello"), "{}", lines[0]);
        assert!(lines[1].contains(" stdout P wor"), "{}", &lines[1][..60]);
        assert!(lines[2].ends_with(" stdout F xxx"), "{}", lines[2]);
    }
}
