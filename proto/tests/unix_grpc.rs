//! Generated server and client talking over a unix socket in a temp dir,
//! plus the socket-file handling of `bind_unix` / `serve_unix`.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;

use berth_proto::runtime::v1::image_service_client::ImageServiceClient;
use berth_proto::runtime::v1::image_service_server::ImageService;
use berth_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_proto::runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use berth_proto::runtime::v1::*;
use berth_proto::{
    MAX_MESSAGE_SIZE, UnixSocketError, bind_unix, connect_unix, image_client, image_server,
    runtime_client, runtime_server, serve_unix,
};
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not part of this test runtime"))
}

/// A runtime answering Version and Status; every other RPC is
/// unimplemented. The macro only writes out those refusals.
struct TestRuntime;

macro_rules! test_runtime_impl {
    (unary { $($unary:ident($unary_req:ty) -> $unary_resp:ty;)* }
     streaming { $($stream:ident($stream_req:ty) -> $assoc:ident<$stream_resp:ty>;)* }) => {
        #[tonic::async_trait]
        impl RuntimeService for TestRuntime {
            async fn version(
                &self,
                request: Request<VersionRequest>,
            ) -> Result<Response<VersionResponse>, Status> {
                Ok(Response::new(VersionResponse {
                    version: request.into_inner().version,
                    runtime_name: "test-runtime".into(),
                    runtime_version: "1.2.3".into(),
                    runtime_api_version: "v1".into(),
                }))
            }

            async fn status(
                &self,
                request: Request<StatusRequest>,
            ) -> Result<Response<StatusResponse>, Status> {
                let verbose = request.into_inner().verbose;
                Ok(Response::new(StatusResponse {
                    status: Some(RuntimeStatus {
                        conditions: vec![RuntimeCondition {
                            r#type: "RuntimeReady".into(),
                            status: true,
                            ..Default::default()
                        }],
                    }),
                    info: if verbose {
                        [("config".to_string(), "{}".to_string())].into()
                    } else {
                        Default::default()
                    },
                    runtime_handlers: vec![RuntimeHandler {
                        name: String::new(),
                        features: Some(RuntimeHandlerFeatures {
                            recursive_read_only_mounts: true,
                            user_namespaces: true,
                        }),
                    }],
                    features: Some(RuntimeFeatures {
                        supplemental_groups_policy: true,
                        user_namespaces_host_network: false,
                    }),
                }))
            }

            $(
                async fn $unary(&self, _: Request<$unary_req>) -> Result<Response<$unary_resp>, Status> {
                    unimplemented()
                }
            )*
            $(
                type $assoc = ResponseStream<$stream_resp>;
                async fn $stream(&self, _: Request<$stream_req>) -> Result<Response<Self::$assoc>, Status> {
                    unimplemented()
                }
            )*
        }
    };
}

test_runtime_impl! {
    unary {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
        update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse;
    }
    streaming {
        stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream<StreamPodSandboxesResponse>;
        stream_containers(StreamContainersRequest) -> StreamContainersStream<StreamContainersResponse>;
        stream_container_stats(StreamContainerStatsRequest) -> StreamContainerStatsStream<StreamContainerStatsResponse>;
        stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> StreamPodSandboxStatsStream<StreamPodSandboxStatsResponse>;
        get_container_events(GetEventsRequest) -> GetContainerEventsStream<ContainerEventResponse>;
        stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> StreamPodSandboxMetricsStream<StreamPodSandboxMetricsResponse>;
    }
}

/// An image store holding two images, listed whole or streamed one per
/// response. Listing with the filter [`HUGE`] answers with a message over
/// tonic's default 4 MiB limit instead.
struct TestImages;

const HUGE: &str = "huge";

fn huge_image() -> Image {
    Image {
        id: "sha256:huge".into(),
        repo_tags: vec!["x".repeat(1 << 20); 5],
        ..Default::default()
    }
}

fn test_images() -> Vec<Image> {
    ["busybox", "pause"]
        .iter()
        .map(|name| Image {
            id: format!("sha256:{name}"),
            repo_tags: vec![format!("docker.io/library/{name}:latest")],
            size: 1234,
            ..Default::default()
        })
        .collect()
}

#[tonic::async_trait]
impl ImageService for TestImages {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let wanted = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|spec| spec.image);
        if wanted.as_deref() == Some(HUGE) {
            return Ok(Response::new(ListImagesResponse {
                images: vec![huge_image()],
            }));
        }
        let images = test_images()
            .into_iter()
            .filter(|image| wanted.as_ref().is_none_or(|w| image.repo_tags.contains(w)))
            .collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    type StreamImagesStream = ResponseStream<StreamImagesResponse>;
    async fn stream_images(
        &self,
        _: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let batches = test_images().into_iter().map(|image| {
            Ok(StreamImagesResponse {
                images: vec![image],
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn image_status(
        &self,
        _: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        unimplemented()
    }
    async fn pull_image(
        &self,
        _: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        unimplemented()
    }
    async fn remove_image(
        &self,
        _: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        unimplemented()
    }
    async fn image_fs_info(
        &self,
        _: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        unimplemented()
    }
}

/// A served test runtime; dropping the stop sender ends it.
struct TestServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    fn start(socket: &Path) -> TestServer {
        let router = tonic::transport::Server::builder()
            .add_service(runtime_server(TestRuntime))
            .add_service(image_server(TestImages));
        // Bind before returning, so clients can connect at once.
        let incoming = bind_unix(socket).expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        });
        TestServer { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("serve");
    }
}

#[tokio::test]
async fn runtime_and_image_services_answer_over_unix_socket() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("cri.sock");
    let server = TestServer::start(&socket);

    let channel = connect_unix(&socket).await?;
    let mut runtime = runtime_client(channel.clone());
    let mut images = image_client(channel);

    let version = runtime
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(version.version, "v1");
    assert_eq!(version.runtime_name, "test-runtime");
    assert_eq!(version.runtime_api_version, "v1");

    let status = runtime
        .status(StatusRequest { verbose: true })
        .await?
        .into_inner();
    let conditions = status.status.expect("status").conditions;
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0].r#type, "RuntimeReady");
    assert!(conditions[0].status);
    assert_eq!(status.info.get("config").map(String::as_str), Some("{}"));
    assert!(
        status.runtime_handlers[0]
            .features
            .expect("features")
            .user_namespaces
    );
    assert!(
        status
            .features
            .expect("features")
            .supplemental_groups_policy
    );

    let all = images
        .list_images(ListImagesRequest::default())
        .await?
        .into_inner();
    assert_eq!(all.images, test_images());
    let filtered = images
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: Some(ImageSpec {
                    image: "docker.io/library/pause:latest".into(),
                    ..Default::default()
                }),
            }),
        })
        .await?
        .into_inner();
    assert_eq!(filtered.images.len(), 1);
    assert_eq!(filtered.images[0].id, "sha256:pause");

    let mut stream = images
        .stream_images(StreamImagesRequest::default())
        .await?
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(batch) = stream.next().await {
        streamed.extend(batch?.images);
    }
    assert_eq!(streamed, test_images());

    let refused = runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect_err("unimplemented");
    assert_eq!(refused.code(), Code::Unimplemented);

    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn bound_socket_has_mode_0660_and_parent_dirs_are_created() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("run/berth/cri.sock");
    let _listener = bind_unix(&socket)?;
    let metadata = std::fs::metadata(&socket)?;
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
    Ok(())
}

#[tokio::test]
async fn stale_socket_is_replaced() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("cri.sock");
    // A listener that is gone leaves its socket file behind.
    drop(std::os::unix::net::UnixListener::bind(&socket)?);
    assert!(socket.exists());

    let server = TestServer::start(&socket);
    let mut client = RuntimeServiceClient::new(connect_unix(&socket).await?);
    client.version(VersionRequest::default()).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn socket_of_a_live_server_is_not_taken_over() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("cri.sock");
    let server = TestServer::start(&socket);

    let err = bind_unix(&socket).expect_err("in use");
    assert!(
        matches!(err, UnixSocketError::InUse { ref path } if *path == socket),
        "{err}"
    );
    // The first server still answers.
    let mut client = RuntimeServiceClient::new(connect_unix(&socket).await?);
    client.version(VersionRequest::default()).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn regular_file_at_socket_path_is_left_alone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cri.sock");
    std::fs::write(&path, "precious")?;
    let err = bind_unix(&path).expect_err("not a socket");
    assert!(matches!(err, UnixSocketError::NotASocket { .. }), "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert_eq!(std::fs::read_to_string(&path)?, "precious");
    Ok(())
}

#[tokio::test]
async fn connecting_to_a_missing_socket_names_the_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("absent.sock");
    let err = connect_unix(&path).await.expect_err("no server");
    assert!(matches!(err, UnixSocketError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    Ok(())
}

#[tokio::test]
async fn serve_unix_serves_until_shutdown_then_removes_the_socket() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("cri.sock");
    let router =
        tonic::transport::Server::builder().add_service(RuntimeServiceServer::new(TestRuntime));
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve_unix(router, socket.clone(), async {
        let _ = stopped.await;
    }));

    // serve_unix binds inside the task: retry until the socket answers.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let channel = loop {
        match connect_unix(&socket).await {
            Ok(channel) => break channel,
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::task::yield_now().await,
        }
    };
    let version = RuntimeServiceClient::new(channel)
        .version(VersionRequest::default())
        .await?
        .into_inner();
    assert_eq!(version.runtime_name, "test-runtime");

    let _ = stop.send(());
    served.await??;
    assert!(!socket.exists(), "socket file removed after shutdown");
    Ok(())
}

fn list_huge() -> ListImagesRequest {
    ListImagesRequest {
        filter: Some(ImageFilter {
            image: Some(ImageSpec {
                image: HUGE.into(),
                ..Default::default()
            }),
        }),
    }
}

#[tokio::test]
async fn messages_beyond_tonics_default_limit_pass_with_cri_limits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("cri.sock");
    let server = TestServer::start(&socket);
    let channel = connect_unix(&socket).await?;
    let size = huge_image().encoded_len();
    assert!(size > 4 << 20 && size < MAX_MESSAGE_SIZE, "{size}");

    let listed = image_client(channel.clone())
        .list_images(list_huge())
        .await?
        .into_inner();
    assert_eq!(listed.images, vec![huge_image()]);

    // A plain generated client keeps tonic's 4 MiB limit and fails.
    let refused = ImageServiceClient::new(channel)
        .list_images(list_huge())
        .await
        .expect_err("over 4 MiB");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");

    server.stop().await;
    Ok(())
}
