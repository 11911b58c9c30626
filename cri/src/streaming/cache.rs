//! One-time tokens for issued streaming URLs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::StreamingError;
use super::request::{AttachRequest, ExecRequest, PortForwardRequest};

/// Random bytes per token (upstream: 8, URL-safe base64 without padding).
const TOKEN_BYTES: usize = 8;

#[derive(Debug, Clone)]
pub(crate) enum CachedRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

pub(crate) struct RequestCache {
    ttl: Duration,
    max_in_flight: usize,
    entries: Mutex<HashMap<String, (Instant, CachedRequest)>>,
}

impl RequestCache {
    pub fn new(ttl: Duration, max_in_flight: usize) -> Self {
        Self {
            ttl,
            max_in_flight,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores the request and returns its fresh token.
    pub fn insert(&self, request: CachedRequest) -> Result<String, StreamingError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|_, (expires, _)| *expires > now);
        if entries.len() >= self.max_in_flight {
            return Err(StreamingError::TooManyInFlight(self.max_in_flight));
        }
        loop {
            let mut raw = [0u8; TOKEN_BYTES];
            getrandom::fill(&mut raw).map_err(|e| StreamingError::Token(e.to_string()))?;
            let token = URL_SAFE_NO_PAD.encode(raw);
            if !entries.contains_key(&token) {
                entries.insert(token.clone(), (now + self.ttl, request));
                return Ok(token);
            }
        }
    }

    /// Takes the request out: a token works once, and not after it expired.
    pub fn consume(&self, token: &str) -> Option<CachedRequest> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (expires, request) = entries.remove(token)?;
        (expires > Instant::now()).then_some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> CachedRequest {
        CachedRequest::Exec(ExecRequest::default())
    }

    #[test]
    fn tokens_are_single_use() {
        let cache = RequestCache::new(Duration::from_secs(60), 10);
        let token = cache.insert(exec()).unwrap();
        assert_eq!(token.len(), 11);
        assert!(cache.consume(&token).is_some());
        assert!(cache.consume(&token).is_none());
        assert!(cache.consume("unknown").is_none());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let cache = RequestCache::new(Duration::ZERO, 10);
        let token = cache.insert(exec()).unwrap();
        assert!(cache.consume(&token).is_none());
    }

    #[test]
    fn in_flight_requests_are_bounded() {
        let cache = RequestCache::new(Duration::from_secs(60), 2);
        cache.insert(exec()).unwrap();
        cache.insert(exec()).unwrap();
        assert!(matches!(
            cache.insert(exec()),
            Err(StreamingError::TooManyInFlight(2))
        ));
    }
}
