//! Attach: the pod supervisor holds the container's stdio; a connection to it
//! carries the client's stdin and resizes in and the container's output out, in
//! supervisor attach frames, until the container's output ends.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::streaming::{BackendError, CommandStreams, InputStream, OutputStream, TerminalSize};
use crate::supervisor::client;
use crate::supervisor::protocol::{Op, frame};

pub async fn run(
    supervisor_dir: &Path,
    container_id: &str,
    streams: CommandStreams,
) -> Result<(), BackendError> {
    let op = Op::Attach {
        id: container_id.to_owned(),
        stdin: streams.stdin.is_some(),
        stdout: streams.stdout.is_some(),
        stderr: streams.stderr.is_some(),
    };
    let dir = supervisor_dir.to_path_buf();
    let connection = tokio::task::spawn_blocking(move || client::attach(&dir, op))
        .await
        .map_err(|e| BackendError(e.to_string()))?
        .map_err(|e| BackendError(e.to_string()))?;
    connection.set_nonblocking(true)?;
    let (from_supervisor, to_supervisor) =
        tokio::net::UnixStream::from_std(connection)?.into_split();
    let input = async {
        forward_input(to_supervisor, streams.stdin, streams.resize).await;
        // The input ended; the session lasts as long as the output.
        std::future::pending::<()>().await
    };
    tokio::select! {
        result = forward_output(from_supervisor, streams.stdout, streams.stderr) => result,
        () = input => Ok(()),
    }
}

/// Container output to the client until the supervisor closes the connection.
async fn forward_output(
    mut from: OwnedReadHalf,
    mut stdout: Option<OutputStream>,
    mut stderr: Option<OutputStream>,
) -> Result<(), BackendError> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        while let Some((kind, payload)) = frame::take(&mut buf).map_err(BackendError)? {
            let target = match kind {
                frame::STDOUT => &mut stdout,
                frame::STDERR => &mut stderr,
                _ => continue,
            };
            if let Some(out) = target.as_mut()
                && out.write_all(&payload).await.is_err()
            {
                *target = None;
            }
        }
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    for out in [stdout, stderr].into_iter().flatten() {
        let mut out = out;
        let _ = out.shutdown().await;
    }
    Ok(())
}

/// Client stdin and terminal resizes to the supervisor.
async fn forward_input(
    mut to: OwnedWriteHalf,
    stdin: Option<InputStream>,
    resize: Option<mpsc::Receiver<TerminalSize>>,
) {
    let (sender, mut frames) = mpsc::channel::<Vec<u8>>(16);
    let stdin_sender = sender.clone();
    let read_stdin = async move {
        let Some(mut stdin) = stdin else {
            return;
        };
        let mut chunk = vec![0u8; frame::MAX_PAYLOAD];
        loop {
            let mut out = Vec::new();
            match stdin.read(&mut chunk).await {
                Ok(n) if n > 0 => frame::encode(frame::STDIN, &chunk[..n], &mut out),
                _ => {
                    frame::encode(frame::STDIN_CLOSE, &[], &mut out);
                    let _ = stdin_sender.send(out).await;
                    return;
                }
            }
            if stdin_sender.send(out).await.is_err() {
                return;
            }
        }
    };
    let read_resizes = async move {
        let Some(mut resize) = resize else {
            return;
        };
        while let Some(size) = resize.recv().await {
            let mut out = Vec::new();
            frame::encode(
                frame::RESIZE,
                &frame::resize(size.width, size.height),
                &mut out,
            );
            if sender.send(out).await.is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some(out) = frames.recv().await {
            if to.write_all(&out).await.is_err() {
                return;
            }
        }
        // Our half stays open: the supervisor takes its closing for a detach.
        std::future::pending::<()>().await;
        drop(to);
    };
    tokio::join!(read_stdin, read_resizes, write);
}
