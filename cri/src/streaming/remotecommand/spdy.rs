//! Exec/attach over SPDY: streams are told apart by their `streamType` header.

use std::sync::Arc;

use super::{Options, Target, execute};
use crate::streaming::protocol::{CommandProtocol, HEADER_STREAM_TYPE};
use crate::streaming::server::Shared;
use crate::streaming::spdy::frame::rst;
use crate::streaming::spdy::session::{self, AcceptedStream};
use crate::streaming::terminal::decode_resizes;
use crate::streaming::upgrade::Upgraded;
use crate::streaming::{CommandStreams, InputStream, OutputStream, StreamingBackend};

#[derive(Default)]
struct StreamSet {
    error: Option<AcceptedStream>,
    stdin: Option<AcceptedStream>,
    stdout: Option<AcceptedStream>,
    stderr: Option<AcceptedStream>,
    resize: Option<AcceptedStream>,
}

pub(super) async fn run<B: StreamingBackend>(
    shared: Arc<Shared<B>>,
    io: Upgraded,
    protocol_name: &'static str,
    target: Target,
    options: Options,
) {
    let protocol = CommandProtocol::from_name(protocol_name).unwrap_or(CommandProtocol::V1);
    let (session, mut incoming) = session::start(io, shared.config.stream_idle_timeout);
    let _abort = session.abort_on_drop();
    let expected = 1
        + usize::from(options.stdin)
        + usize::from(options.stdout)
        + usize::from(options.stderr)
        + usize::from(options.tty && protocol.supports_resize());

    let mut set = StreamSet::default();
    let mut received = 0;
    let deadline = tokio::time::sleep(shared.config.stream_creation_timeout);
    tokio::pin!(deadline);
    while received < expected {
        let stream = tokio::select! {
            stream = incoming.recv() => match stream {
                Some(stream) => stream,
                None => return,
            },
            _ = &mut deadline => {
                tracing::warn!(?target, received, expected, "timed out waiting for the client to create streams");
                session.abort();
                return;
            }
        };
        let slot = match stream.headers.get(HEADER_STREAM_TYPE) {
            Some("error") => &mut set.error,
            Some("stdin") => &mut set.stdin,
            Some("stdout") => &mut set.stdout,
            Some("stderr") => &mut set.stderr,
            Some("resize") if protocol.supports_resize() => &mut set.resize,
            other => {
                tracing::warn!(stream_type = ?other, "unexpected stream type");
                stream.refuse(rst::REFUSED_STREAM);
                continue;
            }
        };
        if slot.is_some() {
            tracing::warn!(stream_type = ?stream.headers.get(HEADER_STREAM_TYPE), "duplicate stream");
            stream.refuse(rst::STREAM_IN_USE);
            continue;
        }
        *slot = Some(stream.accept().await);
        received += 1;
    }
    // Streams opened from now on are refused.
    drop(incoming);

    if protocol == CommandProtocol::V1 {
        // v1 clients wait for the server to close its (unused) half of stdin.
        if let Some(stdin) = &set.stdin {
            stdin.finish().await;
        }
    }
    let mut outputs = Vec::new();
    let mut output = |stream: Option<AcceptedStream>| {
        stream.map(|stream| {
            let (pipe, task) = stream.into_writer();
            outputs.push(task);
            Box::new(pipe) as OutputStream
        })
    };
    let stdout = output(set.stdout);
    let stderr = output(set.stderr);
    let streams = CommandStreams {
        tty: options.tty,
        stdin: set.stdin.map(|s| Box::new(s.into_reader()) as InputStream),
        stdout,
        stderr,
        resize: set.resize.map(|s| decode_resizes(s.into_reader())),
    };
    let closed = session.closed_token();
    let Some(status) = execute(&*shared.backend, &target, streams, outputs, &closed).await else {
        return;
    };
    if let Some(error) = set.error {
        let report = status.encode(protocol.json_status());
        if !report.is_empty() {
            error.write(report.into()).await;
        }
        error.finish().await;
    }
    session.close().await;
}
