//! OCI images from layers: gzip layer blobs, the image config, the manifest,
//! and an OCI image layout directory (oci-layout, index.json, blobs/sha256).

use super::Layer;
use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The runtime part of an image config (`config` in the OCI image config).
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: Vec<(String, String)>,
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    fn to_json(&self) -> Value {
        let mut config = serde_json::Map::new();
        let strings = |v: &[String]| Value::from(v.to_vec());
        if !self.entrypoint.is_empty() {
            config.insert("Entrypoint".into(), strings(&self.entrypoint));
        }
        if !self.cmd.is_empty() {
            config.insert("Cmd".into(), strings(&self.cmd));
        }
        if !self.env.is_empty() {
            config.insert("Env".into(), strings(&self.env));
        }
        if let Some(dir) = &self.working_dir {
            config.insert("WorkingDir".into(), dir.clone().into());
        }
        if let Some(user) = &self.user {
            config.insert("User".into(), user.clone().into());
        }
        if let Some(signal) = &self.stop_signal {
            config.insert("StopSignal".into(), signal.clone().into());
        }
        if !self.labels.is_empty() {
            let labels: serde_json::Map<String, Value> = self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            config.insert("Labels".into(), labels.into());
        }
        Value::Object(config)
    }
}

/// Builds an image from layers (bottom first) and a config.
#[derive(Clone, Debug, Default)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    config: ImageConfig,
}

/// One layer blob: the gzip-compressed tar (what registries and the layout
/// store) and the digests that name it.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    pub tar_gz: Vec<u8>,
    /// Digest of the compressed blob (manifest `layers[].digest`).
    pub digest: String,
    /// Digest of the uncompressed tar (config `rootfs.diff_ids[]`).
    pub diff_id: String,
}

/// An image's blobs, ready to be written as a layout or pushed to a registry.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub layers: Vec<BuiltLayer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl ImageBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// An image whose only layer is [`super::busybox_layer`], running `sh`.
    pub fn busybox() -> anyhow::Result<Self> {
        let config = ImageConfig {
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..ImageConfig::default()
        };
        Ok(Self::new().layer(super::busybox_layer()?).config(config))
    }

    /// Adds a layer on top of the ones already added.
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn config(mut self, config: ImageConfig) -> Self {
        self.config = config;
        self
    }

    pub fn config_mut(&mut self) -> &mut ImageConfig {
        &mut self.config
    }

    pub fn build(&self) -> anyhow::Result<BuiltImage> {
        let layers = self
            .layers
            .iter()
            .map(build_layer)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": self.config.to_json(),
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": layers.iter().map(|_| json!({"created_by": "berth-tests"})).collect::<Vec<_>>(),
        }))?;
        let config_digest = digest_of(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": descriptor(MEDIA_TYPE_CONFIG, &config_digest, config.len()),
            "layers": layers
                .iter()
                .map(|l| descriptor(MEDIA_TYPE_LAYER_GZIP, &l.digest, l.tar_gz.len()))
                .collect::<Vec<_>>(),
        }))?;
        let manifest_digest = digest_of(&manifest);
        Ok(BuiltImage {
            layers,
            config,
            config_digest,
            manifest,
            manifest_digest,
        })
    }
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

fn build_layer(layer: &Layer) -> anyhow::Result<BuiltLayer> {
    let tar = layer.to_tar()?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&tar).context("compressing a layer")?;
    let tar_gz = encoder.finish().context("compressing a layer")?;
    Ok(BuiltLayer {
        digest: digest_of(&tar_gz),
        diff_id: digest_of(&tar),
        tar_gz,
    })
}

impl BuiltImage {
    /// Every blob with its digest and media type: layers, config, manifest.
    pub fn blobs(&self) -> Vec<(&str, &[u8], &str)> {
        let mut blobs: Vec<(&str, &[u8], &str)> = self
            .layers
            .iter()
            .map(|l| {
                (
                    l.digest.as_str(),
                    l.tar_gz.as_slice(),
                    MEDIA_TYPE_LAYER_GZIP,
                )
            })
            .collect();
        blobs.push((&self.config_digest, &self.config, MEDIA_TYPE_CONFIG));
        blobs.push((&self.manifest_digest, &self.manifest, MEDIA_TYPE_MANIFEST));
        blobs
    }

    /// Writes an OCI image layout at `dir` whose index names the manifest
    /// `ref_name` (annotation `org.opencontainers.image.ref.name`), as
    /// `skopeo copy oci:<dir>:<ref_name>` expects.
    pub fn write_layout(&self, dir: &Path, ref_name: &str) -> anyhow::Result<()> {
        let blob_dir = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blob_dir)
            .with_context(|| format!("creating {}", blob_dir.display()))?;
        for (digest, bytes, _) in self.blobs() {
            let hex = digest.trim_start_matches("sha256:");
            std::fs::write(blob_dir.join(hex), bytes)
                .with_context(|| format!("writing blob {digest}"))?;
        }
        let mut manifest = descriptor(
            MEDIA_TYPE_MANIFEST,
            &self.manifest_digest,
            self.manifest.len(),
        );
        manifest["annotations"] = json!({"org.opencontainers.image.ref.name": ref_name});
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [manifest],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
            .context("writing index.json")?;
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .context("writing oci-layout")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;
    use std::io::Read;

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn blob(dir: &Path, digest: &str) -> Vec<u8> {
        std::fs::read(
            dir.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    }

    fn two_layer_image() -> BuiltImage {
        ImageBuilder::new()
            .layer(Layer::new().file("a", "1", 0o644).file("b", "2", 0o644))
            .layer(Layer::new().whiteout("b").file("c", "3", 0o644))
            .config(ImageConfig {
                cmd: vec!["/c".into()],
                ..ImageConfig::default()
            })
            .build()
            .unwrap()
    }

    #[test]
    fn every_blob_in_the_layout_matches_its_digest() {
        let dir = TempDir::new("berth-layout").unwrap();
        two_layer_image()
            .write_layout(dir.path(), "latest")
            .unwrap();
        for entry in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            assert_eq!(
                digest_of(&std::fs::read(entry.path()).unwrap()),
                format!("sha256:{name}")
            );
        }
        assert_eq!(
            read_json(&dir.join("oci-layout"))["imageLayoutVersion"],
            "1.0.0"
        );
    }

    #[test]
    fn index_points_at_the_manifest_which_points_at_config_and_layers() {
        let dir = TempDir::new("berth-layout").unwrap();
        let image = two_layer_image();
        image.write_layout(dir.path(), "v1").unwrap();

        let index = read_json(&dir.join("index.json"));
        let desc = &index["manifests"][0];
        assert_eq!(
            desc["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        assert_eq!(desc["mediaType"], MEDIA_TYPE_MANIFEST);
        let manifest_bytes = blob(dir.path(), desc["digest"].as_str().unwrap());
        assert_eq!(desc["size"], manifest_bytes.len());

        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let config_bytes = blob(dir.path(), manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(manifest["config"]["size"], config_bytes.len());
        let config: Value = serde_json::from_slice(&config_bytes).unwrap();
        assert_eq!(config["config"]["Cmd"][0], "/c");

        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        for (layer, diff_id) in layers
            .iter()
            .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
        {
            let gz = blob(dir.path(), layer["digest"].as_str().unwrap());
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_end(&mut tar)
                .unwrap();
            assert_eq!(digest_of(&tar), diff_id.as_str().unwrap());
        }
    }

    #[test]
    fn same_input_gives_the_same_manifest_digest() {
        assert_eq!(
            two_layer_image().manifest_digest,
            two_layer_image().manifest_digest
        );
    }
}
