//! Assembles layers into image documents: config, manifest (OCI or Docker schema 2)
//! and multi-platform indexes, with the digests a registry and a puller check.

use serde_json::json;

use super::layer::{Layer, sha256_digest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// A document (config, manifest or index) with its digest and media type.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            data,
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// A single-platform image ready to push.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub layers: Vec<Layer>,
    pub config: Blob,
    pub manifest: Blob,
    pub os: String,
    pub architecture: String,
}

#[derive(Clone, Debug)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    os: String,
    architecture: String,
    cmd: Vec<String>,
    env: Vec<String>,
    docker: bool,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder {
            layers: Vec::new(),
            os: "linux".into(),
            architecture: "amd64".into(),
            cmd: vec!["/bin/sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            docker: false,
        }
    }
}

impl ImageBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn platform(mut self, os: &str, architecture: &str) -> Self {
        self.os = os.into();
        self.architecture = architecture.into();
        self
    }

    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = cmd.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Docker schema 2 media types instead of OCI ones.
    pub fn docker_media_types(mut self) -> Self {
        self.docker = true;
        self
    }

    pub fn build(self) -> BuiltImage {
        let config = json!({
            "architecture": self.architecture,
            "os": self.os,
            "config": {"Env": self.env, "Cmd": self.cmd},
            "rootfs": {"type": "layers", "diff_ids": self.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
            "history": self.layers.iter().map(|_| json!({"created_by": "berth-tests"})).collect::<Vec<_>>(),
        });
        let config = Blob::new(
            if self.docker {
                DOCKER_CONFIG
            } else {
                OCI_CONFIG
            },
            serde_json::to_vec(&config).expect("serialise config"),
        );
        let layers: Vec<_> = self
            .layers
            .iter()
            .map(|l| {
                let media_type = if self.docker {
                    l.compression.docker_media_type()
                } else {
                    l.compression.oci_media_type()
                };
                json!({"mediaType": media_type, "digest": l.digest, "size": l.blob.len()})
            })
            .collect();
        let manifest_type = if self.docker {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": layers,
        });
        BuiltImage {
            manifest: Blob::new(
                manifest_type,
                serde_json::to_vec(&manifest).expect("serialise manifest"),
            ),
            config,
            layers: self.layers,
            os: self.os,
            architecture: self.architecture,
        }
    }
}

/// An index (or Docker manifest list) over images of different platforms.
pub fn index_of(images: &[BuiltImage], docker: bool) -> Blob {
    let media_type = if docker {
        DOCKER_MANIFEST_LIST
    } else {
        OCI_INDEX
    };
    let manifests: Vec<_> = images
        .iter()
        .map(|i| {
            let mut d = i.manifest.descriptor();
            d["platform"] = json!({"os": i.os, "architecture": i.architecture});
            d
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
    Blob::new(
        media_type,
        serde_json::to_vec(&index).expect("serialise index"),
    )
}
