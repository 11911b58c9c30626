//! The CRI RuntimeService: runtime-wide RPCs here, the sandbox RPCs in
//! `sandbox.rs`, the rest in their own modules.

use std::collections::HashMap;
use std::sync::Arc;

use berth_proto::runtime::v1 as cri;
use berth_proto::runtime::v1::runtime_service_server::RuntimeService;
use futures_util::stream::BoxStream;
use tonic::{Request, Response, Status};

use super::daemon::Daemon;
use super::status::present;
use crate::config::CgroupDriver;

/// The runtime name CRI clients see.
pub const RUNTIME_NAME: &str = "berth";
/// The CRI API version served.
pub const RUNTIME_API_VERSION: &str = "v1";

pub struct RuntimeServer {
    daemon: Arc<Daemon>,
}

impl RuntimeServer {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        RuntimeServer { daemon }
    }

    /// Runs `work` (cgroup and filesystem reads) off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Daemon) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let daemon = self.daemon.clone();
        tokio::task::spawn_blocking(move || work(&daemon))
            .await
            .map_err(|e| Status::internal(format!("stats task: {e}")))
    }
}

type Rpc<T> = Result<Response<T>, Status>;
type RpcStream<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl RuntimeService for RuntimeServer {
    async fn version(&self, _request: Request<cri::VersionRequest>) -> Rpc<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Rpc<cri::RunPodSandboxResponse> {
        self.daemon
            .run_pod_sandbox(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Rpc<cri::StopPodSandboxResponse> {
        self.daemon
            .stop_pod_sandbox(&request.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Rpc<cri::RemovePodSandboxResponse> {
        self.daemon
            .remove_pod_sandbox(&request.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Rpc<cri::PodSandboxStatusResponse> {
        self.daemon
            .pod_sandbox_status(request.into_inner())
            .map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Rpc<cri::ListPodSandboxResponse> {
        Ok(Response::new(cri::ListPodSandboxResponse {
            items: self.daemon.list_pod_sandbox(request.into_inner().filter),
        }))
    }

    type StreamPodSandboxesStream = RpcStream<cri::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        request: Request<cri::StreamPodSandboxesRequest>,
    ) -> Rpc<Self::StreamPodSandboxesStream> {
        let items = self
            .daemon
            .list_pod_sandbox(request.into_inner().filter)
            .into_iter()
            .map(|sandbox| {
                Ok(cri::StreamPodSandboxesResponse {
                    pod_sandboxes: vec![sandbox],
                })
            })
            .collect::<Vec<_>>();
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Rpc<cri::CreateContainerResponse> {
        self.daemon
            .create_container(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Rpc<cri::StartContainerResponse> {
        self.daemon
            .start_container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Rpc<cri::StopContainerResponse> {
        let request = request.into_inner();
        self.daemon
            .stop_container(&request.container_id, request.timeout)
            .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Rpc<cri::RemoveContainerResponse> {
        self.daemon
            .remove_container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Rpc<cri::ListContainersResponse> {
        Ok(Response::new(cri::ListContainersResponse {
            containers: self
                .daemon
                .list_containers(request.into_inner().filter)
                .await,
        }))
    }

    type StreamContainersStream = RpcStream<cri::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        request: Request<cri::StreamContainersRequest>,
    ) -> Rpc<Self::StreamContainersStream> {
        let containers = self
            .daemon
            .list_containers(request.into_inner().filter)
            .await;
        let items = containers
            .into_iter()
            .map(|c| {
                Ok(cri::StreamContainersResponse {
                    containers: vec![c],
                })
            })
            .collect::<Vec<_>>();
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Rpc<cri::ContainerStatusResponse> {
        self.daemon
            .container_status(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Rpc<cri::UpdateContainerResourcesResponse> {
        self.daemon
            .update_container_resources(request.into_inner())
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Rpc<cri::ReopenContainerLogResponse> {
        self.daemon
            .reopen_container_log(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Rpc<cri::ExecSyncResponse> {
        self.daemon
            .exec_sync(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec(&self, request: Request<cri::ExecRequest>) -> Rpc<cri::ExecResponse> {
        self.daemon
            .exec(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn attach(&self, request: Request<cri::AttachRequest>) -> Rpc<cri::AttachResponse> {
        self.daemon
            .attach(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Rpc<cri::PortForwardResponse> {
        self.daemon
            .port_forward(request.into_inner())
            .map(Response::new)
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Rpc<cri::ContainerStatsResponse> {
        let id = request.into_inner().container_id;
        let stats = self
            .blocking(move |daemon| daemon.container_stats(&id))
            .await??;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Rpc<cri::ListContainerStatsResponse> {
        let filter = request.into_inner().filter;
        let stats = self
            .blocking(move |daemon| daemon.list_container_stats(filter))
            .await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    type StreamContainerStatsStream = RpcStream<cri::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        request: Request<cri::StreamContainerStatsRequest>,
    ) -> Rpc<Self::StreamContainerStatsStream> {
        let filter = request.into_inner().filter;
        let stats = self
            .blocking(move |daemon| daemon.list_container_stats(filter))
            .await?;
        let items = stats.into_iter().map(|s| {
            Ok(cri::StreamContainerStatsResponse {
                container_stats: vec![s],
            })
        });
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Rpc<cri::PodSandboxStatsResponse> {
        let id = request.into_inner().pod_sandbox_id;
        let stats = self
            .blocking(move |daemon| daemon.pod_sandbox_stats(&id))
            .await??;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Rpc<cri::ListPodSandboxStatsResponse> {
        let filter = request.into_inner().filter;
        let stats = self
            .blocking(move |daemon| daemon.list_pod_sandbox_stats(filter))
            .await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxStatsStream = RpcStream<cri::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Rpc<Self::StreamPodSandboxStatsStream> {
        let filter = request.into_inner().filter;
        let stats = self
            .blocking(move |daemon| daemon.list_pod_sandbox_stats(filter))
            .await?;
        let items = stats.into_iter().map(|s| {
            Ok(cri::StreamPodSandboxStatsResponse {
                pod_sandbox_stats: vec![s],
            })
        });
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Rpc<cri::UpdateRuntimeConfigResponse> {
        let request = request.into_inner();
        let runtime_config = present(&request.runtime_config, "runtime_config")?;
        let cidr = runtime_config
            .network_config
            .as_ref()
            .map(|n| n.pod_cidr.clone())
            .unwrap_or_default();
        if !cidr.is_empty() {
            for part in cidr.split(',') {
                part.trim().parse::<ipnet::IpNet>().map_err(|e| {
                    Status::invalid_argument(format!(
                        "runtime_config.network_config.pod_cidr {part:?}: {e}"
                    ))
                })?;
            }
            // Like containerd without a conf template: remembered and reported;
            // the CNI config itself is the operator's.
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            *self
                .daemon
                .pod_cidr
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = cidr;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, request: Request<cri::StatusRequest>) -> Rpc<cri::StatusResponse> {
        let network = self.daemon.cni.status().await;
        let conditions = vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: network.ready,
                reason: network.reason.clone(),
                message: network.message.clone(),
            },
        ];
        let mut info = HashMap::new();
        if request.into_inner().verbose {
            let pod_cidr = self
                .daemon
                .pod_cidr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let config = &self.daemon.config;
            info.insert(
                "config".to_string(),
                serde_json::json!({
                    "root": config.root,
                    "state": config.state,
                    "cniConfDir": config.cni_conf_dir,
                    "cniBinDirs": config.cni_bin_dirs,
                    "podCIDR": pod_cidr,
                })
                .to_string(),
            );
            info.insert("lastCNILoadStatus".to_string(), network.last_load_status);
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: None,
        }))
    }

    async fn checkpoint_container(
        &self,
        request: Request<cri::CheckpointContainerRequest>,
    ) -> Rpc<cri::CheckpointContainerResponse> {
        self.daemon
            .checkpoint_container(request.into_inner())
            .await?;
        Ok(Response::new(cri::CheckpointContainerResponse {}))
    }

    type GetContainerEventsStream = RpcStream<cri::ContainerEventResponse>;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        Ok(Response::new(self.daemon.events.subscribe()))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Rpc<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: super::metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Rpc<cri::ListPodSandboxMetricsResponse> {
        let pod_metrics = self
            .blocking(|daemon| daemon.list_pod_sandbox_metrics())
            .await?;
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    type StreamPodSandboxMetricsStream = RpcStream<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Rpc<Self::StreamPodSandboxMetricsStream> {
        let metrics = self
            .blocking(|daemon| daemon.list_pod_sandbox_metrics())
            .await?;
        let items = metrics.into_iter().map(|m| {
            Ok(cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics: vec![m],
            })
        });
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Rpc<cri::RuntimeConfigResponse> {
        let driver = match self.daemon.config.cgroup_driver {
            CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
            CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Rpc<cri::UpdatePodSandboxResourcesResponse> {
        let request = request.into_inner();
        self.blocking(move |daemon| daemon.update_pod_sandbox_resources(request))
            .await??;
        Ok(Response::new(cri::UpdatePodSandboxResourcesResponse {}))
    }
}
