//! Generated clients and servers with the message size limit CRI peers use.
//!
//! tonic decodes at most 4 MiB per message by default; the kubelet and
//! containerd allow 16 MiB each way, and a ListContainers or
//! ListPodSandboxStats answer on a busy node does exceed 4 MiB.

use tonic::transport::Channel;

use crate::runtime::v1::image_service_client::ImageServiceClient;
use crate::runtime::v1::image_service_server::{ImageService, ImageServiceServer};
use crate::runtime::v1::runtime_service_client::RuntimeServiceClient;
use crate::runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};

/// Largest message sent or accepted, as kubelet and containerd configure.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// RuntimeService client over `channel` with [`MAX_MESSAGE_SIZE`] limits.
pub fn runtime_client(channel: Channel) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// ImageService client over `channel` with [`MAX_MESSAGE_SIZE`] limits.
pub fn image_client(channel: Channel) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// RuntimeService server for `service` with [`MAX_MESSAGE_SIZE`] limits.
pub fn runtime_server<S: RuntimeService>(service: S) -> RuntimeServiceServer<S> {
    RuntimeServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// ImageService server for `service` with [`MAX_MESSAGE_SIZE`] limits.
pub fn image_server<S: ImageService>(service: S) -> ImageServiceServer<S> {
    ImageServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}
