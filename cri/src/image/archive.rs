//! Image archives, for nodes without a registry: import of OCI image layout tars and
//! docker-archive tars (`docker save`), export as one tar that is both (an OCI layout
//! plus docker's `manifest.json`), like `ctr image export`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::content::ContentStore;
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::media::{self, Compression, Descriptor, Index, Manifest, ManifestKind, Platform};
use super::pull::{BlobSource, parse_manifest, select_platform};
use super::record::{ImageRecord, normalize_reference};
use super::store::ImageStore;

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// docker-archive's `manifest.json` entries.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The archive's files, each already copied into the content store.
struct Ingested {
    /// archive path → blob digest (symlinks resolved)
    files: HashMap<String, Digest>,
    path: std::path::PathBuf,
}

impl Ingested {
    fn get(&self, name: &str) -> Result<&Digest> {
        self.files
            .get(clean(name).as_str())
            .ok_or_else(|| self.bad(format!("{name:?} is missing")))
    }

    fn bad(&self, reason: String) -> ImageError {
        ImageError::Archive {
            path: self.path.clone(),
            reason,
        }
    }
}

fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Reads every regular file of the tar into the content store, hashing as it goes.
fn ingest_archive(content: &ContentStore, path: &Path) -> Result<Ingested> {
    let bad = |reason: String| ImageError::Archive {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(ImageError::io(path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut files = HashMap::new();
    let mut links = Vec::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let (digest, _) = content.ingest(&mut entry)?;
                files.insert(name, digest);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    clean(&format!("{dir}/{target}"))
                } else {
                    clean(&target)
                };
                links.push((name, resolved));
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(d) = files.get(&target).cloned() {
            files.insert(name, d);
        }
    }
    Ok(Ingested {
        files,
        path: path.to_path_buf(),
    })
}

impl ImageStore {
    /// Completes one image of an archive from the blobs already ingested
    /// and gives it `names`.
    async fn import_image(
        &self,
        label: &str,
        names: &[String],
        target: Descriptor,
        manifest_desc: Descriptor,
        manifest: Manifest,
        platform: &Platform,
    ) -> Result<ImageRecord> {
        let record = self
            .inner
            .complete(
                label,
                target,
                manifest_desc,
                manifest,
                platform.clone(),
                BlobSource::Local,
            )
            .await?;
        self.inner.commit(record, names)
    }

    /// Loads the images of an OCI layout or docker-archive tar; returns them.
    pub async fn import(
        &self,
        path: &Path,
        platform: Option<&Platform>,
    ) -> Result<Vec<ImageRecord>> {
        let _shared = self.inner.gc_lock.read().await;
        let platform = platform.cloned().unwrap_or_else(Platform::host);
        let content = self.inner.content.clone();
        let owned = path.to_path_buf();
        let ingested = tokio::task::spawn_blocking(move || ingest_archive(&content, &owned))
            .await
            .map_err(|e| ImageError::Archive {
                path: path.to_path_buf(),
                reason: format!("import task failed: {e}"),
            })??;
        let label = path.display().to_string();
        let mut out = Vec::new();
        if let Ok(index_digest) = ingested.get("index.json") {
            let index: Index = self.read_json(&ingested, index_digest)?;
            for desc in index.manifests {
                let (names, target, manifest_desc, manifest) =
                    self.resolve_layout_entry(&ingested, &label, desc, &platform)?;
                out.push(
                    self.import_image(&label, &names, target, manifest_desc, manifest, &platform)
                        .await?,
                );
            }
        } else if let Ok(manifest_digest) = ingested.get("manifest.json") {
            let entries: Vec<DockerEntry> = self.read_json(&ingested, manifest_digest)?;
            for entry in entries {
                let (manifest_desc, manifest) = self.docker_manifest(&ingested, &entry)?;
                let names: Vec<String> = entry
                    .repo_tags
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|t| normalize_reference(t))
                    .collect();
                let target = manifest_desc.clone();
                out.push(
                    self.import_image(&label, &names, target, manifest_desc, manifest, &platform)
                        .await?,
                );
            }
        } else {
            return Err(ingested.bad(
                "neither index.json (OCI layout) nor manifest.json (docker-archive) found".into(),
            ));
        }
        Ok(out)
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        ingested: &Ingested,
        d: &Digest,
    ) -> Result<T> {
        let data = self.inner.content.read_blob(d)?;
        serde_json::from_slice(&data).map_err(|e| ingested.bad(format!("{d}: {e}")))
    }

    /// Follows an index.json entry (through a nested index if needed) to a manifest.
    fn resolve_layout_entry(
        &self,
        ingested: &Ingested,
        label: &str,
        desc: Descriptor,
        platform: &Platform,
    ) -> Result<(Vec<String>, Descriptor, Descriptor, Manifest)> {
        let annotations = desc.annotations.clone().unwrap_or_default();
        let name = annotations.get(NAME_ANNOTATION).or_else(|| {
            annotations
                .get(REF_NAME_ANNOTATION)
                .filter(|n| n.contains('/') || n.contains(':'))
        });
        let mut names: Vec<String> = name
            .and_then(|n| normalize_reference(n))
            .into_iter()
            .collect();
        let digest = Digest::parse(&desc.digest).map_err(|r| ingested.bad(r))?;
        let body =
            self.inner.content.read_blob(&digest).map_err(|_| {
                ingested.bad(format!("blob {digest} named by index.json is missing"))
            })?;
        let media_type = media::declared_media_type(&body, &desc.media_type);
        if let Some(n) = names
            .first()
            .and_then(|n| n.rsplit_once(':').map(|(repo, _)| repo.to_string()))
        {
            names.push(format!("{n}@{digest}"));
        }
        let target = Descriptor {
            media_type: media_type.clone(),
            annotations: None,
            ..desc
        };
        match media::manifest_kind(&media_type) {
            Some(ManifestKind::Image) => {
                let manifest = parse_manifest(label, &target, &body)?;
                Ok((names, target.clone(), target, manifest))
            }
            Some(ManifestKind::Index) => {
                let index: Index = self.read_json(ingested, &digest)?;
                let chosen = select_platform(label, &index, platform)?;
                let chosen_digest = Digest::parse(&chosen.digest).map_err(|r| ingested.bad(r))?;
                let body = self.inner.content.read_blob(&chosen_digest)?;
                let manifest = parse_manifest(label, &chosen, &body)?;
                Ok((
                    names,
                    target,
                    Descriptor {
                        platform: None,
                        ..chosen
                    },
                    manifest,
                ))
            }
            None => Err(ingested.bad(format!("{digest}: unknown media type {media_type:?}"))),
        }
    }

    /// Builds (and stores) a Docker schema 2 manifest for a docker-archive entry.
    fn docker_manifest(
        &self,
        ingested: &Ingested,
        entry: &DockerEntry,
    ) -> Result<(Descriptor, Manifest)> {
        let content = &self.inner.content;
        let describe = |name: &str, media_type: &str| -> Result<Descriptor> {
            let digest = ingested.get(name)?;
            let size = std::fs::metadata(content.blob_path(digest))
                .map_err(ImageError::io(content.blob_path(digest)))?
                .len();
            Ok(Descriptor {
                media_type: media_type.to_string(),
                digest: digest.to_string(),
                size: size as i64,
                ..Default::default()
            })
        };
        let config = describe(&entry.config, media::DOCKER_CONFIG)?;
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let digest = ingested.get(layer)?;
            let mut head = [0u8; 4];
            let path = content.blob_path(digest);
            let n = File::open(&path)
                .and_then(|mut f| f.read(&mut head))
                .map_err(ImageError::io(&path))?;
            let media_type = match Compression::sniff(&head[..n]) {
                Compression::None => media::DOCKER_LAYER_TAR,
                Compression::Gzip => media::DOCKER_LAYER_GZIP,
                Compression::Zstd => media::OCI_LAYER_ZSTD,
            };
            layers.push(describe(layer, media_type)?);
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::DOCKER_MANIFEST.to_string()),
            config,
            layers,
        };
        let body = serde_json::to_vec(&manifest).map_err(|e| ingested.bad(e.to_string()))?;
        let digest = Digest::of_bytes(&body);
        content.put_blob(&digest, &body)?;
        let desc = Descriptor {
            media_type: media::DOCKER_MANIFEST.to_string(),
            digest: digest.to_string(),
            size: body.len() as i64,
            ..Default::default()
        };
        Ok((desc, manifest))
    }

    /// Writes the images named by `queries` as one tar readable both as an OCI image
    /// layout and as a docker-archive.
    pub fn export(&self, queries: &[&str], out: impl Write) -> Result<()> {
        let mut records = Vec::new();
        for q in queries {
            records.push(
                self.status(q)
                    .ok_or_else(|| ImageError::NotFound(q.to_string()))?,
            );
        }
        let mut builder = tar::Builder::new(out);
        let content = &self.inner.content;
        let fail = |e: std::io::Error| ImageError::Archive {
            path: "<export>".into(),
            reason: e.to_string(),
        };
        let mut index_entries = Vec::new();
        let mut docker_entries = Vec::new();
        let mut blobs: BTreeMap<String, ()> = BTreeMap::new();
        for r in &records {
            for d in [&r.manifest, &r.config].into_iter().chain(&r.layers) {
                blobs.insert(d.digest.clone(), ());
            }
            let tags = if r.repo_tags.is_empty() {
                vec![None]
            } else {
                r.repo_tags.iter().map(Some).collect()
            };
            for tag in &tags {
                let mut desc = r.manifest.clone();
                if let Some(tag) = tag {
                    let short = tag.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
                    desc.annotations = Some(BTreeMap::from([
                        (NAME_ANNOTATION.to_string(), tag.to_string()),
                        (REF_NAME_ANNOTATION.to_string(), short.to_string()),
                    ]));
                }
                desc.platform = Some(r.platform.clone());
                index_entries.push(desc);
            }
            docker_entries.push(DockerEntry {
                config: blob_name(&r.config.digest),
                repo_tags: Some(r.repo_tags.clone()),
                layers: r.layers.iter().map(|l| blob_name(&l.digest)).collect(),
            });
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            manifests: index_entries,
        };
        append(
            &mut builder,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .map_err(fail)?;
        append(&mut builder, "index.json", &to_json(&index)?).map_err(fail)?;
        append(&mut builder, "manifest.json", &to_json(&docker_entries)?).map_err(fail)?;
        for digest in blobs.keys() {
            let d = Digest::parse(digest).map_err(|reason| ImageError::Blob {
                image: "<export>".into(),
                digest: digest.clone(),
                reason,
            })?;
            let path = content.blob_path(&d);
            let mut file = File::open(&path).map_err(ImageError::io(&path))?;
            let len = file.metadata().map_err(ImageError::io(&path))?.len();
            let mut header = file_header(len);
            builder
                .append_data(&mut header, blob_name(digest), &mut file)
                .map_err(fail)?;
        }
        builder
            .into_inner()
            .and_then(|mut w| w.flush())
            .map_err(fail)
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| ImageError::Archive {
        path: "<export>".into(),
        reason: e.to_string(),
    })
}

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn file_header(len: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(len);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append(builder: &mut tar::Builder<impl Write>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut header = file_header(data.len() as u64);
    builder.append_data(&mut header, name, data)
}
