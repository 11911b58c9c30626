//! A backend running real processes on the host: `exec` runs the command, `attach`
//! runs `cat` as the "container's" process, `port_forward` dials 127.0.0.1:<port>.

use std::process::Stdio;
use std::sync::Mutex;

use berth_cri::streaming::{
    BackendError, CommandStreams, PortForwardStream, StreamingBackend, TerminalSize,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::Command;

#[derive(Default)]
pub struct ProcessBackend {
    pub resizes: Mutex<Vec<TerminalSize>>,
    pub pids: Mutex<Vec<u32>>,
    pub forwarded_ports: Mutex<Vec<(String, u16)>>,
}

impl ProcessBackend {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        streams: CommandStreams,
    ) -> Result<i32, BackendError> {
        let CommandStreams {
            stdin,
            stdout,
            stderr,
            resize,
            ..
        } = streams;
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(pid) = child.id() {
            self.pids.lock().unwrap().push(pid);
        }
        let stdin_task = match (stdin, child.stdin.take()) {
            (Some(mut from), Some(mut to)) => Some(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from, &mut to).await;
                let _ = to.shutdown().await;
            })),
            _ => None,
        };
        let mut child_out = child.stdout.take().expect("piped");
        let mut child_err = child.stderr.take().expect("piped");
        let copy_out = async move {
            match stdout {
                Some(mut to) => {
                    let _ = tokio::io::copy(&mut child_out, &mut to).await;
                    let _ = to.shutdown().await;
                }
                None => {
                    let _ = tokio::io::copy(&mut child_out, &mut tokio::io::sink()).await;
                }
            }
        };
        let copy_err = async move {
            match stderr {
                Some(mut to) => {
                    let _ = tokio::io::copy(&mut child_err, &mut to).await;
                    let _ = to.shutdown().await;
                }
                None => {
                    let _ = tokio::io::copy(&mut child_err, &mut tokio::io::sink()).await;
                }
            }
        };
        // Resize events are recorded while the process runs; the client may keep the
        // resize stream open after it exits.
        let work = async { tokio::join!(child.wait(), copy_out, copy_err).0 };
        tokio::pin!(work);
        let mut resize = resize;
        let status = loop {
            tokio::select! {
                status = &mut work => break status,
                Some(size) = async { resize.as_mut()?.recv().await } => {
                    self.resizes.lock().unwrap().push(size);
                }
            }
        };
        if let Some(task) = stdin_task {
            task.abort();
        }
        let status = status?;
        Ok(status.code().unwrap_or(128 + 9))
    }
}

impl StreamingBackend for ProcessBackend {
    async fn exec(
        &self,
        _container_id: &str,
        cmd: &[String],
        streams: CommandStreams,
    ) -> Result<i32, BackendError> {
        if cmd[0] == "no-such-command" {
            return Err(BackendError("executable file not found".into()));
        }
        self.run(&cmd[0], &cmd[1..], streams).await
    }

    async fn attach(
        &self,
        _container_id: &str,
        streams: CommandStreams,
    ) -> Result<(), BackendError> {
        self.run("cat", &[], streams).await.map(|_| ())
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        mut stream: PortForwardStream,
    ) -> Result<(), BackendError> {
        self.forwarded_ports
            .lock()
            .unwrap()
            .push((pod_sandbox_id.to_owned(), port));
        let mut target = TcpStream::connect(("127.0.0.1", port)).await?;
        tokio::io::copy_bidirectional(&mut stream, &mut target).await?;
        Ok(())
    }
}

/// Whether a process is gone (or only a zombie waiting to be reaped).
pub fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}
