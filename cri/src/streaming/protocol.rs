//! Protocol names of the streaming endpoints and subprotocol negotiation.

use hyper::HeaderMap;

/// SPDY: the client's supported versions, most preferred first.
pub const HEADER_PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
/// SPDY: what we accept, sent back when negotiation fails.
pub const HEADER_ACCEPTED_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";
pub const HEADER_WEBSOCKET_PROTOCOL: &str = "Sec-WebSocket-Protocol";
/// SPDY stream headers (names are compared without case).
pub const HEADER_STREAM_TYPE: &str = "streamType";
pub const HEADER_PORT: &str = "port";
pub const HEADER_REQUEST_ID: &str = "requestID";

pub const REMOTE_COMMAND_V5: &str = "v5.channel.k8s.io";
pub const REMOTE_COMMAND_V4: &str = "v4.channel.k8s.io";
pub const REMOTE_COMMAND_V3: &str = "v3.channel.k8s.io";
pub const REMOTE_COMMAND_V2: &str = "v2.channel.k8s.io";
pub const REMOTE_COMMAND_V1: &str = "channel.k8s.io";
pub const WEBSOCKET_V4_BASE64: &str = "v4.base64.channel.k8s.io";
pub const WEBSOCKET_BASE64: &str = "base64.channel.k8s.io";
pub const PORT_FORWARD_SPDY: &str = "portforward.k8s.io";

/// SPDY exec/attach protocols, in our order of preference.
pub const SPDY_REMOTE_COMMAND: &[&str] = &[
    REMOTE_COMMAND_V4,
    REMOTE_COMMAND_V3,
    REMOTE_COMMAND_V2,
    REMOTE_COMMAND_V1,
];
pub const SPDY_PORT_FORWARD: &[&str] = &[PORT_FORWARD_SPDY];
/// WebSocket exec/attach subprotocols ("" = none requested: binary, v1 semantics).
pub const WEBSOCKET_REMOTE_COMMAND: &[&str] = &[
    REMOTE_COMMAND_V5,
    REMOTE_COMMAND_V4,
    WEBSOCKET_V4_BASE64,
    REMOTE_COMMAND_V1,
    WEBSOCKET_BASE64,
];
pub const WEBSOCKET_PORT_FORWARD: &[&str] = &[REMOTE_COMMAND_V4, WEBSOCKET_V4_BASE64];

/// Versions of the exec/attach stream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommandProtocol {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl CommandProtocol {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            REMOTE_COMMAND_V5 => Self::V5,
            REMOTE_COMMAND_V4 | WEBSOCKET_V4_BASE64 => Self::V4,
            REMOTE_COMMAND_V3 => Self::V3,
            REMOTE_COMMAND_V2 => Self::V2,
            REMOTE_COMMAND_V1 | WEBSOCKET_BASE64 | "" => Self::V1,
            _ => return None,
        })
    }

    /// v3 added the resize stream.
    pub fn supports_resize(self) -> bool {
        self >= Self::V3
    }

    /// v4 turned the error stream into a JSON metav1.Status.
    pub fn json_status(self) -> bool {
        self >= Self::V4
    }
}

/// All values of a header, comma-separated lists split, blanks dropped.
pub fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first protocol of the client's list that we support (the client's preference wins).
pub fn negotiate<'a>(client: &[String], server: &[&'a str]) -> Option<&'a str> {
    client
        .iter()
        .find_map(|c| server.iter().find(|s| **s == c.as_str()).copied())
}

/// `Connection` lists `upgrade` and `Upgrade` is `token` (both without case).
pub fn is_upgrade_to(headers: &HeaderMap, token: &str) -> bool {
    let connection_upgrade = header_values(headers, "connection")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("upgrade"));
    let upgrade = headers
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(token));
    connection_upgrade && upgrade
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_preference_wins() {
        let client = vec![REMOTE_COMMAND_V2.to_owned(), REMOTE_COMMAND_V4.to_owned()];
        assert_eq!(
            negotiate(&client, SPDY_REMOTE_COMMAND),
            Some(REMOTE_COMMAND_V2)
        );
        assert_eq!(negotiate(&["nope".to_owned()], SPDY_REMOTE_COMMAND), None);
    }

    #[test]
    fn comma_separated_and_repeated_headers_are_merged() {
        let mut headers = HeaderMap::new();
        headers.append(HEADER_PROTOCOL_VERSION, "a, b".parse().unwrap());
        headers.append(HEADER_PROTOCOL_VERSION, "c".parse().unwrap());
        assert_eq!(
            header_values(&headers, HEADER_PROTOCOL_VERSION),
            ["a", "b", "c"]
        );
    }
}
