// The framing of an attach connection: a kind byte, a big-endian u32 length, the
// payload. Pure encoding and decoding, shared by both ends: the daemon's
// `supervisor::protocol::frame` and the berth-supervisor binary, which includes
// this file (so it names only what both have in scope: `Vec`, `String`, `format!`).

/// Supervisor → daemon: container output.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// Daemon → supervisor: input for the container.
pub const STDIN: u8 = 0;
/// Daemon → supervisor: the client closed stdin.
pub const STDIN_CLOSE: u8 = 3;
/// Daemon → supervisor: terminal size, width then height, each a big-endian u16.
pub const RESIZE: u8 = 4;

pub const HEADER: usize = 5;
/// Largest payload either side sends in one frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;

pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

pub fn resize(width: u16, height: u16) -> [u8; 4] {
    let [w0, w1] = width.to_be_bytes();
    let [h0, h1] = height.to_be_bytes();
    [w0, w1, h0, h1]
}

pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    let [w0, w1, h0, h1] = <[u8; 4]>::try_from(payload).ok()?;
    Some((u16::from_be_bytes([w0, w1]), u16::from_be_bytes([h0, h1])))
}

/// Takes the first complete frame off `buf`: `Ok(None)` until one is there, an
/// error for a frame no peer of ours sends.
pub fn take(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, String> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(format!("attach frame of {len} bytes exceeds {MAX_PAYLOAD}"));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[HEADER..HEADER + len].to_vec();
    buf.drain(..HEADER + len);
    Ok(Some((kind, payload)))
}
