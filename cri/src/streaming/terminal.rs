//! Terminal resize events: the resize channel carries a stream of JSON
//! `{"Width":W,"Height":H}` objects (remotecommand.TerminalSize).

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width", alias = "width")]
    pub width: u16,
    #[serde(rename = "Height", alias = "height")]
    pub height: u16,
}

/// Decodes resize events from `source` until it ends or sends something that is not a
/// TerminalSize (then the channel closes, as kubelet stops reading it).
pub(crate) fn decode_resizes<R>(mut source: R) -> mpsc::Receiver<TerminalSize>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = match source.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            let mut events =
                serde_json::Deserializer::from_slice(&pending).into_iter::<TerminalSize>();
            let mut consumed = 0;
            loop {
                match events.next() {
                    Some(Ok(size)) => {
                        consumed = events.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "invalid terminal size on the resize stream");
                        return;
                    }
                    None => break,
                }
            }
            pending.drain(..consumed);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn sizes_split_across_reads_are_decoded() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let mut sizes = decode_resizes(reader);
        writer.write_all(br#"{"Width":80,"Hei"#).await.unwrap();
        writer
            .write_all(b"ght\":24}\n{\"width\":100,\"height\":50}")
            .await
            .unwrap();
        drop(writer);
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 100,
                height: 50
            })
        );
        assert_eq!(sizes.recv().await, None);
    }
}
