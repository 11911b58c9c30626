//! A streaming exec: `berth-runtime exec` in the container, its stdio on pipes or,
//! for a tty, on a pty whose master the runtime's process sends back over a console
//! socket in a private dir.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::pty::PtyMaster;
use crate::server::daemon::Daemon;
use crate::streaming::{BackendError, CommandStreams, OutputStream};

const CONSOLE_SOCKET: &str = "console.sock";
/// How long the runtime may take to hand over the pty.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(
    daemon: &Daemon,
    container_id: &str,
    cmd: &[String],
    streams: CommandStreams,
) -> Result<i32, BackendError> {
    let mut session = ExecDir::create(&daemon.config.state.join("exec"))?;
    let mut command = Command::new(daemon.runtime_binary());
    command
        .arg("--root")
        .arg(daemon.runtime_root())
        .arg("exec")
        .arg("--pid-file")
        .arg(session.path.join("pid"));
    if streams.tty {
        command
            .arg("--tty")
            .arg("--console-socket")
            .arg(CONSOLE_SOCKET)
            .current_dir(&session.path);
    }
    command.arg(container_id).args(cmd).kill_on_drop(true);
    let status = if streams.tty {
        on_terminal(command, &session, streams).await?
    } else {
        on_pipes(command, streams).await?
    };
    session.finished = true;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255))
}

async fn on_pipes(
    mut command: Command,
    streams: CommandStreams,
) -> Result<ExitStatus, BackendError> {
    let piped_if = |wanted: bool| {
        if wanted {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    command
        .stdin(piped_if(streams.stdin.is_some()))
        .stdout(piped_if(streams.stdout.is_some()))
        .stderr(piped_if(streams.stderr.is_some()));
    let mut child = command.spawn()?;
    let child_stdin = child.stdin.take();
    let input = async {
        if let (Some(mut from), Some(mut to)) = (streams.stdin, child_stdin) {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            // Dropping `to` closes the process's stdin.
        }
        std::future::pending::<()>().await
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        let (_, _, status) = tokio::join!(
            copy_output(stdout, streams.stdout),
            copy_output(stderr, streams.stderr),
            child.wait()
        );
        status
    };
    tokio::select! {
        status = finished => Ok(status?),
        () = input => Err(BackendError("stdin copy ended unexpectedly".into())),
    }
}

async fn copy_output<R: AsyncRead + Unpin>(from: Option<R>, to: Option<OutputStream>) {
    if let (Some(mut from), Some(mut to)) = (from, to) {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    }
}

async fn on_terminal(
    mut command: Command,
    session: &ExecDir,
    streams: CommandStreams,
) -> Result<ExitStatus, BackendError> {
    let listener = bind_in(&session.path, CONSOLE_SOCKET)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let master = tokio::select! {
        accepted = listener.accept() => receive_pty(accepted?.0).await?,
        status = child.wait() => return Err(runtime_failed(&mut child, status?).await),
        _ = tokio::time::sleep(CONSOLE_TIMEOUT) => {
            return Err(BackendError("the runtime did not hand over the exec's terminal".into()));
        }
    };
    let pty = PtyMaster::new(master)?;
    let input = async {
        if let Some(mut resizes) = streams.resize {
            let resize = async {
                while let Some(size) = resizes.recv().await {
                    pty.resize(size);
                }
            };
            tokio::join!(resize, copy_to_pty(&pty, streams.stdin));
        } else {
            copy_to_pty(&pty, streams.stdin).await;
        }
        std::future::pending::<()>().await
    };
    let finished = async {
        let (_, status) = tokio::join!(copy_from_pty(&pty, streams.stdout), child.wait());
        status
    };
    tokio::select! {
        status = finished => Ok(status?),
        () = input => Err(BackendError("terminal input ended unexpectedly".into())),
    }
}

async fn copy_to_pty(pty: &PtyMaster, stdin: Option<crate::streaming::InputStream>) {
    let Some(mut stdin) = stdin else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 || pty.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn copy_from_pty(pty: &PtyMaster, stdout: Option<OutputStream>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut stdout = stdout;
    loop {
        let n = match pty.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Without a stdout stream the output is read and dropped, so the process
        // never blocks on a full terminal.
        if let Some(out) = stdout.as_mut()
            && out.write_all(&buf[..n]).await.is_err()
        {
            stdout = None;
        }
    }
    if let Some(mut out) = stdout {
        let _ = out.shutdown().await;
    }
}

/// What the runtime said when it failed before handing over the pty.
async fn runtime_failed(child: &mut Child, status: ExitStatus) -> BackendError {
    let mut said = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut said).await;
    }
    BackendError(format!("exec failed ({status}): {}", said.trim()))
}

async fn receive_pty(connection: tokio::net::UnixStream) -> Result<OwnedFd, BackendError> {
    let connection = connection.into_std()?;
    connection.set_nonblocking(false)?;
    connection.set_read_timeout(Some(CONSOLE_TIMEOUT))?;
    tokio::task::spawn_blocking(move || crate::oci::console::recv_fd(&OwnedFd::from(connection)))
        .await
        .map_err(|e| BackendError(e.to_string()))?
        .map_err(|e| BackendError(e.to_string()))
}

/// Binds a socket in `dir` through a descriptor of it: the full path may be longer
/// than the 108 bytes a socket address holds.
fn bind_in(dir: &Path, name: &str) -> Result<tokio::net::UnixListener, BackendError> {
    let handle = std::fs::File::open(dir)?;
    let path = format!("/proc/self/fd/{}/{name}", handle.as_raw_fd());
    Ok(tokio::net::UnixListener::bind(path)?)
}

/// The private dir of one exec (pid file, console socket). Dropped before the exec
/// finished (the client went away), it kills the exec'd process, which the runtime
/// cannot pass SIGKILL on to; it is removed either way.
struct ExecDir {
    path: PathBuf,
    finished: bool,
}

impl ExecDir {
    fn create(parent: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(parent)?;
        let path = parent.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir(&path)?;
        Ok(Self {
            path,
            finished: false,
        })
    }
}

impl Drop for ExecDir {
    fn drop(&mut self) {
        if !self.finished
            && let Some(pid) = std::fs::read_to_string(self.path.join("pid"))
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
