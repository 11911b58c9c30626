//! Header-block compression: one zlib stream per direction for the whole session,
//! primed with the SPDY/3 dictionary and sync-flushed after every block.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;
use super::dictionary::SPDY3_DICTIONARY;

/// Upper bound of one inflated header block; stream headers of the k8s protocols are tiny.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Deflates outgoing header blocks.
pub struct HeaderCompressor {
    zlib: Compress,
}

impl HeaderCompressor {
    pub fn new() -> Result<Self, SpdyError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&SPDY3_DICTIONARY)
            .map_err(|e| SpdyError::Compression(format!("setting the dictionary: {e}")))?;
        Ok(Self { zlib })
    }

    /// Compresses one header block; the output ends on a sync-flush boundary so the
    /// peer can inflate it without later input.
    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            consumed += (self.zlib.total_in() - before) as usize;
            // A sync flush is complete once all input is taken and output space is left over.
            if consumed == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Inflates incoming header blocks.
pub struct HeaderDecompressor {
    zlib: Decompress,
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    pub fn decompress(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Protocol(format!(
                    "header block inflates beyond {MAX_HEADER_BLOCK} bytes"
                )));
            }
            let (before_in, before_out) = (self.zlib.total_in(), self.zlib.total_out());
            let result =
                self.zlib
                    .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.zlib.total_in() - before_in) as usize;
            match result {
                Ok(status) => {
                    if consumed == block.len() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    let stalled = self.zlib.total_in() == before_in
                        && self.zlib.total_out() == before_out
                        && out.len() < out.capacity();
                    if status == Status::StreamEnd || stalled {
                        return Err(SpdyError::Compression(
                            "header block does not continue the zlib stream".into(),
                        ));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(&SPDY3_DICTIONARY)
                        .map_err(|e| SpdyError::Compression(format!("peer dictionary: {e}")))?;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
        }
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_through_one_shared_stream_each_way() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let mut decompressor = HeaderDecompressor::new();
        for block in [
            &b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05error"[..],
            b"second",
            b"",
        ] {
            let packed = compressor.compress(block).unwrap();
            assert_eq!(decompressor.decompress(&packed).unwrap(), block);
        }
    }

    #[test]
    fn a_block_from_another_dictionary_is_rejected() {
        let mut other = Compress::new(Compression::default(), true);
        other.set_dictionary(b"not the spdy dictionary").unwrap();
        let mut packed = Vec::with_capacity(256);
        other
            .compress_vec(b"headers", &mut packed, FlushCompress::Sync)
            .unwrap();
        assert!(HeaderDecompressor::new().decompress(&packed).is_err());
    }
}
