//! One CRI log line: encoding and parsing.

use chrono::{DateTime, SecondsFormat, Utc};

use super::LogError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub timestamp: DateTime<Utc>,
    pub stream: LogStream,
    /// `P`: the line continues in the next entry of the same stream.
    pub partial: bool,
    /// The bytes of the line without the newline.
    pub message: Vec<u8>,
}

/// RFC 3339 with nanoseconds, always 9 digits and `Z` (containerd's layout; any
/// RFC3339Nano parser reads it).
pub fn format_timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

impl LogEntry {
    /// The line as written to the file, newline included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format_timestamp(self.timestamp).as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.stream.as_str().as_bytes());
        out.extend_from_slice(if self.partial { b" P " } else { b" F " });
        out.extend_from_slice(&self.message);
        out.push(b'\n');
    }
}

/// Parses one line (with or without its newline) like kubelet's parseCRILog.
pub fn parse_line(line: &[u8]) -> Result<LogEntry, LogError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let malformed =
        |what: &str| LogError::Malformed(format!("{what} in {:?}", String::from_utf8_lossy(line)));
    let mut fields = line.splitn(4, |b| *b == b' ');
    let timestamp = fields.next().ok_or_else(|| malformed("no timestamp"))?;
    let timestamp = std::str::from_utf8(timestamp)
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| malformed("bad timestamp"))?
        .with_timezone(&Utc);
    let stream = match fields.next() {
        Some(b"stdout") => LogStream::Stdout,
        Some(b"stderr") => LogStream::Stderr,
        _ => return Err(malformed("unknown stream")),
    };
    // The tag field may hold several `:`-separated tags; the first is F or P.
    let tags = fields.next().ok_or_else(|| malformed("no tag"))?;
    let partial = match tags.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(malformed("unknown tag")),
    };
    let message = fields.next().unwrap_or_default().to_vec();
    Ok(LogEntry {
        timestamp,
        stream,
        partial,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn lines_round_trip() {
        let entry = LogEntry {
            timestamp: Utc.timestamp_opt(1_700_000_000, 120_000_000).unwrap(),
            stream: LogStream::Stderr,
            partial: true,
            message: b"half a line with  spaces".to_vec(),
        };
        let mut line = Vec::new();
        entry.encode(&mut line);
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "2023-11-14T22:13:20.120000000Z stderr P half a line with  spaces\n"
        );
        assert_eq!(parse_line(&line).unwrap(), entry);
    }

    #[test]
    fn kubelet_style_lines_parse() {
        let entry = parse_line(b"2016-10-06T00:17:09.669794202+02:00 stdout F:x \n").unwrap();
        assert_eq!(entry.stream, LogStream::Stdout);
        assert!(!entry.partial);
        assert_eq!(entry.message, b"");
        assert_eq!(entry.timestamp.timestamp_subsec_nanos(), 669_794_202);
        assert!(parse_line(b"yesterday stdout F hi").is_err());
        assert!(parse_line(b"2016-10-06T00:17:09Z stdin F hi").is_err());
        assert!(parse_line(b"2016-10-06T00:17:09Z stdout X hi").is_err());
    }
}
