//! The daemon's side: starting a pod's supervisor and sending it requests
//! (blocking; callers on the async runtime use `spawn_blocking`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::SOCKET;
use super::protocol::{Op, Request, Response, VERSION};

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("supervisor {}: {reason}", dir.display())]
    Unreachable { dir: PathBuf, reason: String },
    #[error("{0}")]
    Failed(String),
}

/// Connects to the socket in `dir` through a descriptor of the dir, since
/// the full path may exceed the 108 bytes a socket address holds.
fn connect(dir: &Path) -> std::io::Result<UnixStream> {
    let handle = std::fs::File::open(dir)?;
    UnixStream::connect(format!("/proc/self/fd/{}/{SOCKET}", handle.as_raw_fd()))
}

fn unreachable(dir: &Path, reason: String) -> SupervisorError {
    SupervisorError::Unreachable {
        dir: dir.to_path_buf(),
        reason,
    }
}

/// Connects to the supervisor in `dir` and sends `op`; the answer is the caller's to read.
fn send(dir: &Path, op: Op) -> Result<UnixStream, SupervisorError> {
    let mut stream = connect(dir).map_err(|e| unreachable(dir, format!("connecting: {e}")))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut line = serde_json::to_vec(&Request {
        version: VERSION,
        op,
    })
    .map_err(|e| unreachable(dir, e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| unreachable(dir, format!("sending: {e}")))?;
    Ok(stream)
}

/// Parses an answer line; a supervisor-side failure becomes [`SupervisorError::Failed`].
fn parse_answer(dir: &Path, answer: &[u8]) -> Result<Response, SupervisorError> {
    let response: Response =
        serde_json::from_slice(answer).map_err(|e| unreachable(dir, format!("bad answer: {e}")))?;
    if response.error.is_empty() {
        Ok(response)
    } else {
        Err(SupervisorError::Failed(response.error))
    }
}

/// Sends one request to the supervisor in `dir`.
pub fn call(dir: &Path, op: Op) -> Result<Response, SupervisorError> {
    let stream = send(dir, op)?;
    let mut answer = Vec::new();
    BufReader::new(&stream)
        .read_until(b'\n', &mut answer)
        .map_err(|e| unreachable(dir, format!("reading: {e}")))?;
    parse_answer(dir, &answer)
}

/// Sends an [`Op::Attach`] and returns the connection, which from then on carries
/// [`frame`](super::protocol::frame)s. The answer is read byte by byte so that no
/// frame that follows it is swallowed.
pub fn attach(dir: &Path, op: Op) -> Result<UnixStream, SupervisorError> {
    let mut stream = send(dir, op)?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            Ok(_) => return Err(unreachable(dir, "closed before answering".into())),
            Err(e) => return Err(unreachable(dir, format!("reading: {e}"))),
        }
    }
    parse_answer(dir, &answer)?;
    let _ = stream.set_read_timeout(None);
    Ok(stream)
}

/// True when a supervisor answers in `dir`.
pub fn is_running(dir: &Path) -> bool {
    connect(dir).is_ok()
}

/// Starts a supervisor for `dir` (exec of the `berth-supervisor` binary) in
/// its own session, so it outlives the daemon, and waits until it answers.
pub fn start(binary: &Path, dir: &Path, runtime_root: &Path) -> Result<(), SupervisorError> {
    let unreachable = |reason: String| unreachable(dir, reason);
    std::fs::create_dir_all(dir).map_err(|e| unreachable(format!("creating dir: {e}")))?;
    let log = std::fs::File::create(dir.join("supervisor.log"))
        .map_err(|e| unreachable(format!("creating log: {e}")))?;
    let mut command = std::process::Command::new(binary);
    command
        .arg(dir)
        .arg(runtime_root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| unreachable(format!("starting {}: {e}", binary.display())))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_running(dir) {
        if let Ok(Some(status)) = child.try_wait() {
            let said = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            return Err(unreachable(format!(
                "exited at start with {status}: {}",
                said.trim()
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(unreachable("did not answer within 10s".into()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    record_pid(dir, child.id()).map_err(|e| unreachable(format!("recording its pid: {e}")))?;
    // Reaped by a thread so no zombie stays behind when it ends.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// `<dir>/supervisor.pid`: "<pid> <start time>" of the running supervisor,
/// so that its death can be told apart from never having started one.
const PID_FILE: &str = "supervisor.pid";

fn record_pid(dir: &Path, pid: u32) -> std::io::Result<()> {
    let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
    let started = crate::sandbox::process::start_time(pid)
        .ok_or_else(|| std::io::Error::other("exited right after answering"))?;
    let tmp = dir.join(format!("{PID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{pid} {started}"))?;
    std::fs::rename(&tmp, dir.join(PID_FILE))
}

/// True when a supervisor was started for `dir` and has since died
/// (crashed or killed) without being shut down.
pub fn has_died(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(PID_FILE)) else {
        return false;
    };
    let mut fields = text.split_whitespace();
    match (
        fields.next().and_then(|f| f.parse().ok()),
        fields.next().and_then(|f| f.parse().ok()),
    ) {
        (Some(pid), Some(started)) => !crate::sandbox::process::is_alive(pid, started),
        _ => false,
    }
}

/// Ends the supervisor in `dir` on purpose (its pod is being removed).
pub fn shutdown(dir: &Path) -> Result<(), SupervisorError> {
    let _ = std::fs::remove_file(dir.join(PID_FILE));
    call(dir, Op::Shutdown).map(|_| ())
}
