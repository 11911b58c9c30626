//! Pulling: resolve the reference, pick this platform's manifest, then fetch and unpack
//! the missing layers in parallel. The image record is written last, so an interrupted
//! pull leaves only staging leftovers (cleared on the next open) and complete blobs and
//! layers that the next pull reuses.

use oci_client::Reference;

use super::digest::Digest;
use super::error::{ImageError, Result};
use super::media::Platform;
use super::media::{self, Compression, ConfigRootfs, Descriptor, Index, Manifest, ManifestKind};
use super::record::ImageRecord;
use super::registry::{Credentials, Session};
use super::store::{Inner, names_for};

/// Where missing blobs come from.
pub(crate) enum BlobSource<'a> {
    Registry(&'a Session),
    /// Everything must already be in the content store (imports).
    Local,
}

impl Inner {
    pub async fn pull_uncached(
        &self,
        reference: Reference,
        credentials: &Credentials,
        platform: &Platform,
    ) -> Result<ImageRecord> {
        let _shared = self.gc_lock.read().await;
        let image = reference.whole();
        tracing::info!(%image, %platform, "pulling image");
        let session = Session::new(&self.hosts, &reference, credentials).await?;
        let wanted = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let top = session.manifest(&wanted).await?;
        self.store_manifest(&image, &top.digest, &top.body)?;
        let target = Descriptor {
            media_type: top.media_type.clone(),
            digest: top.digest.to_string(),
            size: top.body.len() as i64,
            ..Default::default()
        };
        let (manifest_desc, manifest) = match media::manifest_kind(&top.media_type) {
            Some(ManifestKind::Image) => {
                (target.clone(), parse_manifest(&image, &target, &top.body)?)
            }
            Some(ManifestKind::Index) => {
                let index: Index = parse_json(&image, &target.digest, &top.body)?;
                let chosen = select_platform(&image, &index, platform)?;
                let fetched = session.manifest(&chosen.digest).await?;
                if media::manifest_kind(&fetched.media_type) != Some(ManifestKind::Image) {
                    return Err(ImageError::Manifest {
                        image,
                        digest: chosen.digest.clone(),
                        reason: format!(
                            "index entry is a {:?}, not an image manifest",
                            fetched.media_type
                        ),
                    });
                }
                self.store_manifest(&image, &fetched.digest, &fetched.body)?;
                let manifest = parse_manifest(&image, &chosen, &fetched.body)?;
                let desc = Descriptor {
                    media_type: fetched.media_type,
                    platform: None,
                    ..chosen
                };
                (desc, manifest)
            }
            None => {
                return Err(ImageError::Manifest {
                    image,
                    digest: target.digest,
                    reason: format!("unknown manifest media type {:?}", top.media_type),
                });
            }
        };
        let record = self
            .complete(
                &image,
                target,
                manifest_desc,
                manifest,
                platform.clone(),
                BlobSource::Registry(&session),
            )
            .await?;
        let record = self.commit(record, &names_for(&reference, &top.digest))?;
        tracing::info!(%image, id = %record.id, "pulled image");
        Ok(record)
    }

    fn store_manifest(&self, image: &str, digest: &Digest, body: &[u8]) -> Result<()> {
        self.content.put_blob(digest, body).map_err(|e| match e {
            ImageError::Blob { digest, reason, .. } => ImageError::Blob {
                image: image.to_string(),
                digest,
                reason,
            },
            other => other,
        })
    }

    /// Makes sure config and layers of a manifest are in the store (fetching what is
    /// missing from `source`) and returns the record to save. Layers whose unpacked
    /// directory exists are skipped entirely: nothing is downloaded for them.
    pub(crate) async fn complete(
        &self,
        image: &str,
        target: Descriptor,
        manifest_desc: Descriptor,
        manifest: Manifest,
        platform: Platform,
        source: BlobSource<'_>,
    ) -> Result<ImageRecord> {
        let config_desc = manifest.config.clone();
        if !matches!(
            config_desc.media_type.as_str(),
            media::OCI_CONFIG | media::DOCKER_CONFIG
        ) {
            return Err(ImageError::Blob {
                image: image.to_string(),
                digest: config_desc.digest,
                reason: format!(
                    "unknown config media type {:?} (not a container image)",
                    config_desc.media_type
                ),
            });
        }
        let config_digest = parse_digest(image, &config_desc.digest)?;
        self.ensure_blob(image, &config_desc, &config_digest, &source)
            .await?;
        let config_bytes = self.content.read_blob(&config_digest)?;
        let config: ConfigRootfs = parse_json(image, &config_desc.digest, &config_bytes)?;
        let diff_ids = config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| parse_digest(image, d))
            .collect::<Result<Vec<_>>>()?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Manifest {
                image: image.to_string(),
                digest: manifest_desc.digest,
                reason: format!(
                    "{} layers but the config lists {} diff ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let mut work = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            let compression =
                Compression::of_layer_media_type(&layer.media_type).ok_or_else(|| {
                    ImageError::Blob {
                        image: image.to_string(),
                        digest: layer.digest.clone(),
                        reason: format!("unknown layer media type {:?}", layer.media_type),
                    }
                })?;
            work.push((
                layer,
                parse_digest(image, &layer.digest)?,
                compression,
                diff_id,
            ));
        }
        // Downloads and unpacks run together, a bounded number at a time. After a
        // failure no new layer starts, but those under way finish (an unpack runs on a
        // blocking thread that cannot be cancelled), so when this returns nothing of the
        // pull is still writing to the store.
        let permits = tokio::sync::Semaphore::new(self.options.max_concurrent_downloads.max(1));
        let (permits, source) = (&permits, &source);
        let results = futures_util::future::join_all(work.into_iter().map(
            |(layer, blob, compression, diff_id)| async move {
                let Ok(_permit) = permits.acquire().await else {
                    return Ok(()); // closed: another layer failed
                };
                let result = self
                    .ensure_layer(image, layer, blob, compression, diff_id, source)
                    .await;
                if result.is_err() {
                    permits.close();
                }
                result
            },
        ))
        .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let size = config_desc.size.max(0) as u64
            + manifest
                .layers
                .iter()
                .map(|l| l.size.max(0) as u64)
                .sum::<u64>();
        Ok(ImageRecord {
            id: config_digest,
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            target,
            manifest: manifest_desc,
            config: config_desc,
            layers: manifest.layers,
            diff_ids,
            platform,
            size,
        })
    }

    async fn ensure_layer(
        &self,
        image: &str,
        layer: &Descriptor,
        blob: Digest,
        compression: Compression,
        diff_id: &Digest,
        source: &BlobSource<'_>,
    ) -> Result<()> {
        if self.content.has_layer(diff_id) {
            return Ok(());
        }
        let _unpacking = self.lock_key(diff_id.as_str()).await;
        if self.content.has_layer(diff_id) {
            return Ok(());
        }
        self.ensure_blob(image, layer, &blob, source).await?;
        let content = self.content.clone();
        let (image_owned, diff_owned) = (image.to_string(), diff_id.clone());
        tokio::task::spawn_blocking(move || {
            content.unpack_blob(&image_owned, &blob, compression, &diff_owned)
        })
        .await
        .map_err(|e| ImageError::Blob {
            image: image.to_string(),
            digest: layer.digest.clone(),
            reason: format!("unpack task failed: {e}"),
        })?
    }

    async fn ensure_blob(
        &self,
        image: &str,
        desc: &Descriptor,
        digest: &Digest,
        source: &BlobSource<'_>,
    ) -> Result<()> {
        if self.content.has_blob(digest) {
            return Ok(());
        }
        match source {
            BlobSource::Registry(session) => {
                let staged = self.content.stage(digest.hex());
                session.blob(desc, &staged.path).await?;
                self.content.commit_blob(staged, digest)
            }
            BlobSource::Local => Err(ImageError::Blob {
                image: image.to_string(),
                digest: digest.to_string(),
                reason: "blob is missing from the archive".into(),
            }),
        }
    }
}

fn parse_digest(image: &str, digest: &str) -> Result<Digest> {
    Digest::parse(digest).map_err(|reason| ImageError::Blob {
        image: image.to_string(),
        digest: digest.to_string(),
        reason,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(image: &str, digest: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| ImageError::Manifest {
        image: image.to_string(),
        digest: digest.to_string(),
        reason: format!("invalid JSON: {e}"),
    })
}

pub(crate) fn parse_manifest(image: &str, desc: &Descriptor, body: &[u8]) -> Result<Manifest> {
    let manifest: Manifest = parse_json(image, &desc.digest, body)?;
    if manifest.schema_version != 2 {
        return Err(ImageError::Manifest {
            image: image.to_string(),
            digest: desc.digest.clone(),
            reason: format!("schemaVersion {} is not supported", manifest.schema_version),
        });
    }
    Ok(manifest)
}

/// The first index entry that is an image manifest for `platform`.
pub(crate) fn select_platform(
    image: &str,
    index: &Index,
    platform: &Platform,
) -> Result<Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| {
            media::manifest_kind(&d.media_type) != Some(ManifestKind::Index)
                && d.platform.as_ref().is_some_and(|p| platform.accepts(p))
        })
        .cloned()
        .ok_or_else(|| ImageError::NoMatchingPlatform {
            image: image.to_string(),
            platform: platform.to_string(),
            available: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}
