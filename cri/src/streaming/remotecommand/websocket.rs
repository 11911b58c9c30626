//! Exec/attach over WebSocket channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize.

use std::sync::Arc;

use bytes::Bytes;

use super::{Options, Target, execute};
use crate::streaming::protocol::CommandProtocol;
use crate::streaming::server::Shared;
use crate::streaming::terminal::decode_resizes;
use crate::streaming::upgrade::{Upgraded, into_websocket};
use crate::streaming::websocket::{self as ws, Channel, Framing};
use crate::streaming::{CommandStreams, InputStream, OutputStream, StreamingBackend};

const STDIN: usize = 0;
const STDOUT: usize = 1;
const STDERR: usize = 2;
const ERROR: usize = 3;
const RESIZE: usize = 4;

pub(super) async fn run<B: StreamingBackend>(
    shared: Arc<Shared<B>>,
    io: Upgraded,
    protocol_name: &'static str,
    target: Target,
    options: Options,
) {
    let protocol = CommandProtocol::from_name(protocol_name).unwrap_or(CommandProtocol::V1);
    let framing = Framing {
        base64: protocol_name.contains("base64."),
        close_signal: protocol >= CommandProtocol::V5,
    };
    let pick = |wanted: bool, channel: Channel| if wanted { channel } else { Channel::Ignore };
    let channels = [
        pick(options.stdin, Channel::Read),
        pick(options.stdout, Channel::Write),
        pick(options.stderr, Channel::Write),
        Channel::Write,
        // Resize events only matter to a terminal; otherwise nobody would read them.
        pick(options.tty, Channel::Read),
    ];
    let ws = into_websocket(io).await;
    let mut conn = ws::open(ws, framing, &channels, shared.config.stream_idle_timeout);
    let closed = conn.closed_token();

    // An empty message on the lowest writable channel tells the client we are ready.
    let ready = if options.stdout {
        STDOUT
    } else if options.stderr {
        STDERR
    } else {
        ERROR
    };
    conn.ends[ready].writer.write(Bytes::new()).await;

    let mut outputs = Vec::new();
    let mut output = |index: usize, wanted: bool| {
        wanted.then(|| {
            let (pipe, task) = conn.ends[index].writer.clone().into_pipe(closed.clone());
            outputs.push(task);
            Box::new(pipe) as OutputStream
        })
    };
    let stdout = output(STDOUT, options.stdout);
    let stderr = output(STDERR, options.stderr);
    let stdin = conn.ends[STDIN]
        .backend
        .take()
        .map(|s| Box::new(s) as InputStream);
    let resize = conn.ends[RESIZE].backend.take().map(decode_resizes);
    let streams = CommandStreams {
        tty: options.tty,
        stdin,
        stdout,
        stderr,
        resize,
    };
    let Some(status) = execute(&*shared.backend, &target, streams, outputs, &closed).await else {
        return;
    };
    let report = status.encode(protocol.json_status());
    if !report.is_empty() {
        conn.ends[ERROR].writer.write(report.into()).await;
    }
    conn.close().await;
}
