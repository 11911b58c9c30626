//! The zlib preset dictionary of SPDY/3 header compression (draft 3, section 2.6.10.1).
//!
//! The dictionary is the length-prefixed list of common header names and values
//! followed by a raw run of status codes, dates and media types. Both ends must use
//! it byte for byte: zlib checks its Adler-32 before inflating.

use std::sync::LazyLock;

/// Entries encoded as a 4-byte big-endian length followed by the bytes.
const LENGTH_PREFIXED: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// Bytes appended as they are after the length-prefixed entries.
const RAW_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header dictionary (1423 bytes).
pub static SPDY3_DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut dictionary = Vec::with_capacity(1423);
    for entry in LENGTH_PREFIXED {
        dictionary.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        dictionary.extend_from_slice(entry.as_bytes());
    }
    dictionary.extend_from_slice(RAW_TAIL.as_bytes());
    dictionary
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_has_the_size_and_edges_of_the_draft() {
        assert_eq!(SPDY3_DICTIONARY.len(), 1423);
        assert_eq!(&SPDY3_DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(SPDY3_DICTIONARY.ends_with(b",*,enq=0."));
    }
}
