//! Port forwarding: data/error stream pairs per forwarded connection (SPDY) or per
//! port given in the query (WebSocket).

mod spdy;
mod websocket;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::protocol::{SPDY_PORT_FORWARD, WEBSOCKET_PORT_FORWARD};
use super::request::PortForwardRequest;
use super::server::{HttpResponse, Shared, text_response};
use super::{BackendError, StreamingBackend, upgrade};

pub(crate) fn serve<B: StreamingBackend>(
    shared: Arc<Shared<B>>,
    request: Request<Incoming>,
    forward: PortForwardRequest,
) -> HttpResponse {
    let session_shared = shared.clone();
    let pod = forward.pod_sandbox_id;
    if upgrade::is_websocket(request.headers()) {
        let ports = match query_ports(request.uri().query().unwrap_or("")) {
            Ok(ports) => ports,
            Err(message) => return text_response(StatusCode::BAD_REQUEST, message),
        };
        match upgrade::websocket(request.headers(), WEBSOCKET_PORT_FORWARD) {
            Err(refusal) => refusal,
            Ok((protocol, switching)) => {
                upgrade::on_upgrade(&shared, request, move |io| {
                    websocket::run(session_shared, io, protocol, pod, ports)
                });
                switching
            }
        }
    } else {
        match upgrade::spdy(request.headers(), SPDY_PORT_FORWARD) {
            Err(refusal) => refusal,
            Ok((_, switching)) => {
                upgrade::on_upgrade(&shared, request, move |io| {
                    spdy::run(session_shared, io, pod)
                });
                switching
            }
        }
    }
}

/// Ports of a WebSocket port-forward: every `port` (kubelet) or `ports` (the
/// apiserver's PodPortForwardOptions) parameter, each a comma-separated list.
fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    let mut seen_parameter = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "port" && name != "ports" {
            continue;
        }
        seen_parameter = true;
        if value.is_empty() {
            return Err(format!("query parameter {name:?} cannot be empty"));
        }
        for port in value.split(',') {
            ports.push(parse_port(port)?);
        }
    }
    if !seen_parameter {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

pub(crate) fn parse_port(text: &str) -> Result<u16, String> {
    let port: u16 = text
        .trim()
        .parse()
        .map_err(|e| format!("unable to parse {text:?} as a port: {e}"))?;
    if port == 0 {
        return Err(format!("port {text:?} must be > 0"));
    }
    Ok(port)
}

fn forward_error(port: u16, pod: &str, error: &BackendError) -> String {
    format!("error forwarding port {port} to pod {pod}, uid : {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_repeated_and_comma_separated_parameters() {
        assert_eq!(
            query_ports("ports=80,443&port=8080&x=1").unwrap(),
            [80, 443, 8080]
        );
        assert!(query_ports("").unwrap_err().contains("required"));
        assert!(query_ports("port=").unwrap_err().contains("empty"));
        assert!(query_ports("port=0").unwrap_err().contains("> 0"));
        assert!(
            query_ports("port=http")
                .unwrap_err()
                .contains("unable to parse")
        );
    }
}
