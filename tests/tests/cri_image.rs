//! ImageService: pull from the local registry, list, status, remove.

use berth_proto::runtime::v1::{
    ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest,
    RemoveImageRequest,
};
use berth_tests::cri::{self, CriEnv};

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn status(
    env: &mut CriEnv,
    image: &str,
) -> anyhow::Result<Option<berth_proto::runtime::v1::Image>> {
    Ok(env
        .image
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await?
        .into_inner()
        .image)
}

#[test]
fn pulled_image_is_listed_with_tag_digest_and_size() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let busybox = env.images.busybox.clone();
        let image_ref = env.pull(&busybox).await?;
        assert!(
            image_ref.starts_with("sha256:"),
            "image ref is the image id: {image_ref}"
        );

        let image = status(&mut env, &busybox)
            .await?
            .expect("pulled image has a status");
        assert_eq!(image.id, image_ref);
        assert_eq!(image.repo_tags, vec![busybox.clone()]);
        let repo = busybox.rsplit_once(':').unwrap().0;
        assert!(
            image
                .repo_digests
                .iter()
                .any(|d| d.starts_with(&format!("{repo}@sha256:"))),
            "{:?}",
            image.repo_digests
        );
        assert!(image.size > 500_000, "busybox layer size: {}", image.size);

        // By id and by digest reference too.
        assert_eq!(
            status(&mut env, &image_ref).await?.map(|i| i.id),
            Some(image_ref.clone())
        );
        let digest_ref = image.repo_digests[0].clone();
        assert_eq!(
            status(&mut env, &digest_ref).await?.map(|i| i.id),
            Some(image_ref.clone())
        );

        let listed = env
            .image
            .list_images(ListImagesRequest { filter: None })
            .await?
            .into_inner()
            .images;
        assert!(
            listed
                .iter()
                .any(|i| i.id == image_ref && i.repo_tags.contains(&busybox)),
            "{listed:?}"
        );
        Ok(())
    })
}

#[test]
fn pull_by_digest() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let busybox = env.images.busybox.clone();
        let image_ref = env.pull(&busybox).await?;
        let digest_ref = status(&mut env, &busybox)
            .await?
            .expect("status")
            .repo_digests[0]
            .clone();
        env.image
            .remove_image(RemoveImageRequest {
                image: spec(&image_ref),
            })
            .await?;
        assert_eq!(env.pull(&digest_ref).await?, image_ref);
        Ok(())
    })
}

#[test]
fn removed_image_has_no_status_and_remove_is_idempotent() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        for _ in 0..2 {
            env.image
                .remove_image(RemoveImageRequest {
                    image: spec(&busybox),
                })
                .await?;
        }
        assert!(status(&mut env, &busybox).await?.is_none());
        Ok(())
    })
}

#[test]
fn pull_of_a_missing_image_fails() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let missing = format!("{}/berth-test/missing:1", env.registry.host());
        let result = env
            .image
            .pull_image(PullImageRequest {
                image: spec(&missing),
                auth: None,
                sandbox_config: None,
            })
            .await;
        assert!(result.is_err(), "{result:?}");
        assert!(status(&mut env, &missing).await?.is_none());
        Ok(())
    })
}

#[test]
fn image_fs_info_reports_usage() -> anyhow::Result<()> {
    cri::run(|mut env| async move {
        let busybox = env.images.busybox.clone();
        env.pull(&busybox).await?;
        let info = env
            .image
            .image_fs_info(ImageFsInfoRequest {})
            .await?
            .into_inner();
        let fs = info.image_filesystems.first().expect("an image filesystem");
        assert!(
            !fs.fs_id.as_ref().expect("fs id").mountpoint.is_empty(),
            "{fs:?}"
        );
        Ok(())
    })
}
