//! SPDY/3.1 frames and their wire encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::SpdyError;
use super::compression::{HeaderCompressor, HeaderDecompressor};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Length field of every frame is 24 bits.
pub const MAX_FRAME_PAYLOAD: usize = 0x00FF_FFFF;
/// SETTINGS id announcing the receiver's initial per-stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// Window every stream and the session start with (SPDY/3.1).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;

const HEADER_LEN: usize = 8;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
const STREAM_ID_MASK: u32 = 0x7FFF_FFFF;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
}

/// Name/value header pairs; names are lower case on the wire and compared without case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Uncompressed v3 header block; repeated names share one entry, values NUL-separated.
    fn encode_block(&self) -> Vec<u8> {
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in &self.0 {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        let mut block = Vec::new();
        block.put_u32(names.len() as u32);
        for name in names {
            let values: Vec<&str> = self
                .0
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            let value = values.join("\0");
            block.put_u32(name.len() as u32);
            block.put_slice(name.to_ascii_lowercase().as_bytes());
            block.put_u32(value.len() as u32);
            block.put_slice(value.as_bytes());
        }
        block
    }

    fn decode_block(mut block: &[u8]) -> Result<Self, SpdyError> {
        let truncated = || SpdyError::Protocol("truncated header block".into());
        let read_string = |block: &mut &[u8]| -> Result<String, SpdyError> {
            if block.remaining() < 4 {
                return Err(truncated());
            }
            let len = block.get_u32() as usize;
            if block.remaining() < len {
                return Err(truncated());
            }
            let text = String::from_utf8(block[..len].to_vec())
                .map_err(|_| SpdyError::Protocol("header is not UTF-8".into()))?;
            block.advance(len);
            Ok(text)
        };
        if block.remaining() < 4 {
            return Err(truncated());
        }
        let count = block.get_u32();
        let mut headers = Headers::new();
        for _ in 0..count {
            let name = read_string(&mut block)?;
            if name.is_empty() {
                return Err(SpdyError::Protocol("empty header name".into()));
            }
            let value = read_string(&mut block)?;
            for part in value.split('\0') {
                headers.0.push((name.to_ascii_lowercase(), part.to_owned()));
            }
        }
        Ok(headers)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_stream_id: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value)
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
}

/// Encodes frames of one direction of a session (owns that direction's zlib stream).
pub struct FrameEncoder {
    compressor: HeaderCompressor,
}

impl FrameEncoder {
    pub fn new() -> Result<Self, SpdyError> {
        Ok(Self {
            compressor: HeaderCompressor::new()?,
        })
    }

    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                check_length(data.len())?;
                dst.put_u32(stream_id & STREAM_ID_MASK);
                dst.put_u32(u32::from(*flags) << 24 | data.len() as u32);
                dst.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_stream_id,
                priority,
                flags,
                headers,
            } => {
                let block = self.compressor.compress(&headers.encode_block())?;
                control_header(dst, TYPE_SYN_STREAM, *flags, 10 + block.len())?;
                dst.put_u32(stream_id & STREAM_ID_MASK);
                dst.put_u32(associated_stream_id & STREAM_ID_MASK);
                dst.put_u8((priority & 0x07) << 5);
                dst.put_u8(0); // credential slot, unused
                dst.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                let block = self.compressor.compress(&headers.encode_block())?;
                control_header(dst, kind, *flags, 4 + block.len())?;
                dst.put_u32(stream_id & STREAM_ID_MASK);
                dst.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(dst, TYPE_RST_STREAM, 0, 8)?;
                dst.put_u32(stream_id & STREAM_ID_MASK);
                dst.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control_header(dst, TYPE_SETTINGS, *flags, 4 + 8 * entries.len())?;
                dst.put_u32(entries.len() as u32);
                for (entry_flags, id, value) in entries {
                    dst.put_u32(u32::from(*entry_flags) << 24 | (id & 0x00FF_FFFF));
                    dst.put_u32(*value);
                }
            }
            Frame::Ping { id } => {
                control_header(dst, TYPE_PING, 0, 4)?;
                dst.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(dst, TYPE_GOAWAY, 0, 8)?;
                dst.put_u32(last_good_stream_id & STREAM_ID_MASK);
                dst.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(dst, TYPE_WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(stream_id & STREAM_ID_MASK);
                dst.put_u32(delta & STREAM_ID_MASK);
            }
        }
        Ok(())
    }
}

fn check_length(len: usize) -> Result<(), SpdyError> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(SpdyError::FrameTooLarge(len));
    }
    Ok(())
}

fn control_header(dst: &mut BytesMut, kind: u16, flags: u8, len: usize) -> Result<(), SpdyError> {
    check_length(len)?;
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(kind);
    dst.put_u32(u32::from(flags) << 24 | len as u32);
    Ok(())
}

/// Decodes frames of one direction of a session (owns that direction's zlib stream).
pub struct FrameDecoder {
    decompressor: HeaderDecompressor,
    max_payload: usize,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self {
            decompressor: HeaderDecompressor::new(),
            max_payload: MAX_FRAME_PAYLOAD,
        }
    }

    /// Takes one complete frame off the front of `src`; `None` while more bytes are needed.
    /// Control frames of types SPDY/3.1 does not define (NOOP, CREDENTIAL) are skipped.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        loop {
            if src.len() < HEADER_LEN {
                return Ok(None);
            }
            let len = u32::from_be_bytes([0, src[5], src[6], src[7]]) as usize;
            if len > self.max_payload {
                return Err(SpdyError::FrameTooLarge(len));
            }
            if src.len() < HEADER_LEN + len {
                src.reserve(HEADER_LEN + len - src.len());
                return Ok(None);
            }
            let head = src.split_to(HEADER_LEN);
            let flags = head[4];
            let mut payload = src.split_to(len).freeze();
            if head[0] & 0x80 == 0 {
                let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                return Ok(Some(Frame::Data {
                    stream_id,
                    flags,
                    data: payload,
                }));
            }
            let version = u16::from_be_bytes([head[0], head[1]]) & 0x7FFF;
            if version != VERSION {
                return Err(SpdyError::UnsupportedVersion(version));
            }
            let kind = u16::from_be_bytes([head[2], head[3]]);
            if let Some(frame) = self.control(kind, flags, &mut payload)? {
                return Ok(Some(frame));
            }
        }
    }

    fn control(&mut self, kind: u16, flags: u8, p: &mut Bytes) -> Result<Option<Frame>, SpdyError> {
        let need = |p: &Bytes, n: usize| {
            if p.len() < n {
                Err(SpdyError::Protocol(format!(
                    "control frame type {kind} is {} bytes, needs {n}",
                    p.len()
                )))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            TYPE_SYN_STREAM => {
                need(p, 10)?;
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let associated_stream_id = p.get_u32() & STREAM_ID_MASK;
                let priority = p.get_u8() >> 5;
                p.advance(1);
                let headers = self.headers(p)?;
                Frame::SynStream {
                    stream_id,
                    associated_stream_id,
                    priority,
                    flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(p, 4)?;
                let stream_id = p.get_u32() & STREAM_ID_MASK;
                let headers = self.headers(p)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(p, 8)?;
                Frame::RstStream {
                    stream_id: p.get_u32() & STREAM_ID_MASK,
                    status: p.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(p, 4)?;
                let count = p.get_u32() as usize;
                need(p, count.saturating_mul(8))?;
                let entries = (0..count)
                    .map(|_| {
                        let id = p.get_u32();
                        ((id >> 24) as u8, id & 0x00FF_FFFF, p.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need(p, 4)?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                need(p, 4)?;
                let last_good_stream_id = p.get_u32() & STREAM_ID_MASK;
                // SPDY/2 peers omit the status.
                let status = if p.len() >= 4 {
                    p.get_u32()
                } else {
                    goaway::OK
                };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(p, 8)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & STREAM_ID_MASK,
                    delta: p.get_u32() & STREAM_ID_MASK,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }

    fn headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        // An empty block still has to be inflated as an (empty) zlib chunk by some peers;
        // a literally empty one means no headers.
        if block.is_empty() {
            return Ok(Headers::new());
        }
        Headers::decode_block(&self.decompressor.decompress(block)?)
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let mut encoder = FrameEncoder::new().unwrap();
        let mut wire = BytesMut::new();
        for frame in frames {
            encoder.encode(frame, &mut wire).unwrap();
        }
        let mut decoder = FrameDecoder::new();
        let mut out = Vec::new();
        // Feed byte by byte to exercise partial reads.
        let mut src = BytesMut::new();
        for byte in wire {
            src.put_u8(byte);
            while let Some(frame) = decoder.decode(&mut src).unwrap() {
                out.push(frame);
            }
        }
        out
    }

    #[test]
    fn every_frame_type_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_stream_id: 0,
                priority: 3,
                flags: FLAG_FIN,
                headers: Headers::new()
                    .with("streamType", "error")
                    .with("port", "80"),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::Headers {
                stream_id: 1,
                flags: 0,
                headers: Headers::new().with("a", "1").with("a", "2"),
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: goaway::OK,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 4096,
            },
            Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn rst_stream_wire_layout_matches_the_draft() {
        let mut wire = BytesMut::new();
        FrameEncoder::new()
            .unwrap()
            .encode(
                &Frame::RstStream {
                    stream_id: 9,
                    status: rst::REFUSED_STREAM,
                },
                &mut wire,
            )
            .unwrap();
        assert_eq!(
            &wire[..],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 3]
        );
    }

    #[test]
    fn other_versions_are_refused() {
        let mut src = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(
            FrameDecoder::new().decode(&mut src),
            Err(SpdyError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let mut src = BytesMut::from(
            &[
                0x80, 3, 0, 5, 0, 0, 0, 0, 0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1,
            ][..],
        );
        assert_eq!(
            FrameDecoder::new().decode(&mut src).unwrap(),
            Some(Frame::Ping { id: 1 })
        );
    }
}
