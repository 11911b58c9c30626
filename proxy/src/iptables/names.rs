//! Chain names as upstream derives them, so tooling and operators find the same names:
//! prefix + first 16 characters of base32(sha256(servicePortName + protocol [+ endpoint])).

use crate::model::ServicePortName;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

pub(crate) fn hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let encoded = base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &digest);
    encoded[..16].to_string()
}

fn port_hash(name: &ServicePortName) -> String {
    hash(&format!("{name}{}", name.protocol.lower()))
}

pub fn service_chain(name: &ServicePortName) -> String {
    format!("KUBE-SVC-{}", port_hash(name))
}

pub fn local_chain(name: &ServicePortName) -> String {
    format!("KUBE-SVL-{}", port_hash(name))
}

pub fn external_chain(name: &ServicePortName) -> String {
    format!("KUBE-EXT-{}", port_hash(name))
}

pub fn firewall_chain(name: &ServicePortName) -> String {
    format!("KUBE-FW-{}", port_hash(name))
}

pub fn endpoint_chain(name: &ServicePortName, endpoint: SocketAddr) -> String {
    format!(
        "KUBE-SEP-{}",
        hash(&format!("{name}{}{endpoint}", name.protocol.lower()))
    )
}

/// Whether a chain is one of the per-Service chains this proxy owns.
pub fn is_service_chain(chain: &str) -> bool {
    [
        "KUBE-SVC-",
        "KUBE-SVL-",
        "KUBE-EXT-",
        "KUBE-FW-",
        "KUBE-SEP-",
    ]
    .iter()
    .any(|p| chain.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn names_match_upstream_derivation() {
        let name = ServicePortName {
            namespace: "ns1".into(),
            name: "svc1".into(),
            port: "p80".into(),
            protocol: Protocol::Tcp,
        };
        // sha256("ns1/svc1:p80tcp"), base32, first 16 characters.
        let expected = base32::encode(
            base32::Alphabet::Rfc4648 { padding: true },
            &Sha256::digest(b"ns1/svc1:p80tcp"),
        );
        assert_eq!(
            service_chain(&name),
            format!("KUBE-SVC-{}", &expected[..16])
        );
        assert_eq!(
            service_chain(&name).len(),
            25,
            "fits the 28-character chain name limit"
        );
        assert_ne!(
            endpoint_chain(&name, "10.0.0.1:80".parse().unwrap()),
            endpoint_chain(&name, "10.0.0.2:80".parse().unwrap())
        );
    }
}
