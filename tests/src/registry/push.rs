//! Uploads images through the distribution HTTP API with oci-client's push calls
//! (blob uploads, manifest PUTs), so a test registry holds what a real one would.

use http::HeaderValue;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::image::{Blob, BuiltImage, index_of};

pub struct Pusher {
    client: Client,
    registry: String,
    auth: RegistryAuth,
}

impl Pusher {
    pub fn new(
        registry: &str,
        plain_http: bool,
        ca_pem: Option<Vec<u8>>,
        auth: RegistryAuth,
    ) -> Pusher {
        let client = Client::new(ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: ca_pem
                .into_iter()
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                })
                .collect(),
            ..Default::default()
        });
        Pusher {
            client,
            registry: registry.to_string(),
            auth,
        }
    }

    fn reference(&self, repo: &str, tag_or_digest: &str) -> Reference {
        if tag_or_digest.contains(':') {
            Reference::with_digest(self.registry.clone(), repo.into(), tag_or_digest.into())
        } else {
            Reference::with_tag(self.registry.clone(), repo.into(), tag_or_digest.into())
        }
    }

    async fn authorize(&self, reference: &Reference) -> anyhow::Result<()> {
        self.client
            .auth(reference, &self.auth, RegistryOperation::Push)
            .await?;
        Ok(())
    }

    pub async fn push_blob(&self, repo: &str, data: &[u8], digest: &str) -> anyhow::Result<()> {
        let reference = self.reference(repo, "latest");
        self.authorize(&reference).await?;
        if !self.client.blob_exists(&reference, digest).await? {
            self.client
                .push_blob(&reference, data.to_vec(), digest)
                .await?;
        }
        Ok(())
    }

    /// PUTs a manifest or index document under a tag or its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        tag_or_digest: &str,
        doc: &Blob,
    ) -> anyhow::Result<()> {
        let reference = self.reference(repo, tag_or_digest);
        self.authorize(&reference).await?;
        self.client
            .push_manifest_raw(
                &reference,
                doc.data.clone(),
                HeaderValue::from_str(&doc.media_type)?,
            )
            .await?;
        Ok(())
    }

    /// Pushes layers, config and manifest; tags the manifest. Returns its digest.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        image: &BuiltImage,
    ) -> anyhow::Result<String> {
        for layer in &image.layers {
            self.push_blob(repo, &layer.blob, &layer.digest).await?;
        }
        self.push_blob(repo, &image.config.data, &image.config.digest)
            .await?;
        self.push_manifest(repo, tag, &image.manifest).await?;
        Ok(image.manifest.digest.clone())
    }

    /// Pushes every platform's image by digest and an index over them under `tag`.
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        images: &[BuiltImage],
        docker: bool,
    ) -> anyhow::Result<Blob> {
        for image in images {
            for layer in &image.layers {
                self.push_blob(repo, &layer.blob, &layer.digest).await?;
            }
            self.push_blob(repo, &image.config.data, &image.config.digest)
                .await?;
            self.push_manifest(repo, &image.manifest.digest, &image.manifest)
                .await?;
        }
        let index = index_of(images, docker);
        self.push_manifest(repo, tag, &index).await?;
        Ok(index)
    }
}
