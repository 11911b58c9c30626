//! Certificates for a daemon's TLS streaming server: a CA made for one test
//! and a serving certificate for 127.0.0.1 it signed, written as the PEM
//! files an operator gives berth-cri, and the CA as a client's trust root.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct StreamingPki {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Trusts the CA that signed `cert_file`.
    pub roots: rustls::RootCertStore,
}

impl StreamingPki {
    /// Writes `server.crt` and `server.key` into `dir`.
    pub fn write(dir: &Path) -> anyhow::Result<StreamingPki> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "berth-test-streaming-ca");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "berth-cri streaming");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let cert_file = dir.join("server.crt");
        let key_file = dir.join("server.key");
        std::fs::write(&cert_file, server_cert.pem())?;
        std::fs::write(&key_file, server_key.serialize_pem())?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca_cert.der().clone())
            .context("adding the test CA")?;
        Ok(StreamingPki {
            cert_file,
            key_file,
            roots,
        })
    }
}
