//! The CRI ImageService over the [`ImageStore`].

use std::collections::HashMap;

use berth_proto::runtime::v1 as cri;
use berth_proto::runtime::v1::image_service_server::ImageService;
use futures_util::stream::{self, BoxStream};
use tonic::{Request, Response, Status};

use super::status::{image_status, now_nanos, present, required};
use crate::image::{Credentials, ImageRecord, ImageStore};

pub struct ImageServer {
    store: ImageStore,
}

impl ImageServer {
    pub fn new(store: ImageStore) -> Self {
        ImageServer { store }
    }

    /// The CRI view of a record: uid or username from the image config's `User`.
    fn to_cri(&self, record: &ImageRecord) -> cri::Image {
        let user = self
            .store
            .config(record)
            .ok()
            .and_then(|c| c.config().as_ref().and_then(|c| c.user().clone()))
            .unwrap_or_default();
        let (uid, username) = image_user(&user);
        cri::Image {
            id: record.id.as_str().to_string(),
            repo_tags: record.repo_tags.clone(),
            repo_digests: record.repo_digests.clone(),
            size: record.size,
            uid: uid.map(|value| cri::Int64Value { value }),
            username,
            spec: Some(cri::ImageSpec {
                image: record.id.as_str().to_string(),
                ..Default::default()
            }),
            pinned: false,
        }
    }
}

/// Splits an image `User` (`uid`, `name`, `uid:gid`, `name:group`) into what
/// CRI reports: a numeric uid, or else a user name.
pub fn image_user(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

fn credentials(auth: Option<&cri::AuthConfig>) -> Credentials {
    match auth {
        None => Credentials::anonymous(),
        Some(auth) => Credentials {
            username: auth.username.clone(),
            password: auth.password.clone(),
            auth: auth.auth.clone(),
            identity_token: auth.identity_token.clone(),
            registry_token: auth.registry_token.clone(),
        },
    }
}

#[tonic::async_trait]
impl ImageService for ImageServer {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|spec| spec.image)
            .filter(|image| !image.is_empty());
        let mut images: Vec<cri::Image> = self
            .store
            .list()
            .iter()
            .filter(|record| filter.as_deref().is_none_or(|query| record.matches(query)))
            .map(|record| self.to_cri(record))
            .collect();
        images.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    type StreamImagesStream = BoxStream<'static, Result<cri::StreamImagesResponse, Status>>;

    async fn stream_images(
        &self,
        request: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let listed = self
            .list_images(Request::new(cri::ListImagesRequest {
                filter: request.into_inner().filter,
            }))
            .await?
            .into_inner();
        let items = listed
            .images
            .into_iter()
            .map(|image| {
                Ok(cri::StreamImagesResponse {
                    images: vec![image],
                })
            })
            .collect::<Vec<_>>();
        Ok(Response::new(Box::pin(stream::iter(items))))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let spec = present(&request.image, "image")?;
        let query = required(&spec.image, "image.image")?;
        // A missing image is not an error for ImageStatus: the kubelet pulls on nil.
        let Some(record) = self.store.status(query) else {
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if request.verbose {
            let config = self.store.config(&record).map_err(image_status)?;
            let verbose = serde_json::json!({
                "chainID": crate::image::Digest::chain_ids(&record.diff_ids).last().map(|d| d.as_str().to_string()),
                "imageSpec": config,
                "manifest": record.manifest,
                "platform": record.platform,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(self.to_cri(&record)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let request = request.into_inner();
        let spec = present(&request.image, "image")?;
        let reference = required(&spec.image, "image.image")?;
        let record = self
            .store
            .pull(reference, &credentials(request.auth.as_ref()), None)
            .await
            .map_err(image_status)?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: record.id.as_str().to_string(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let request = request.into_inner();
        let spec = present(&request.image, "image")?;
        let query = required(&spec.image, "image.image")?;
        // Removing an image that is already gone succeeds, as with containerd.
        match self.store.remove(query) {
            Ok(()) | Err(crate::image::ImageError::NotFound(_)) => {
                Ok(Response::new(cri::RemoveImageResponse {}))
            }
            Err(e) => Err(image_status(e)),
        }
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let usage = self.store.fs_usage().map_err(image_status)?;
        let filesystem = cri::FilesystemUsage {
            timestamp: now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: usage.mountpoint.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value {
                value: usage.used_bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: usage.inodes_used,
            }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![filesystem.clone()],
            container_filesystems: vec![filesystem],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_user_reports_uid_or_name() {
        assert_eq!(image_user(""), (None, String::new()));
        assert_eq!(image_user("1000"), (Some(1000), String::new()));
        assert_eq!(image_user("1000:1000"), (Some(1000), String::new()));
        assert_eq!(image_user("nobody:nogroup"), (None, "nobody".into()));
    }
}
