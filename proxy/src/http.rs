//! A minimal HTTP/1 server for the healthz, metrics and health-check-node-port endpoints.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// A response: status, content type and body.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

pub type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// Serves `handler` on `addr` until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    handler: Handler,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let reply = handler(req.uri().path());
                        let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
                        *resp.status_mut() = reply.status;
                        if let Ok(v) = hyper::header::HeaderValue::from_str(reply.content_type) {
                            resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                        }
                        async move { Ok::<_, Infallible>(resp) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}
