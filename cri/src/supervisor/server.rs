//! The supervisor process: one poll loop over the request socket, SIGCHLD
//! (a signalfd) and the containers' output pipes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

use super::SOCKET;
use super::helper::{ContainerStdio, Helper};
use super::op::RuntimeOp;
use super::protocol::{
    Exit, Op, Request, Response, Stdio, VERSION, exit_file, now_nanos, read_exit,
};
use super::stdio::ContainerIo;
use crate::logs::{DEFAULT_MAX_LINE_SIZE, LogWriter};

struct Container {
    pid: i32,
    started_at: Option<i64>,
    exit: Option<Exit>,
    io: ContainerIo,
}

struct Supervisor {
    dir: PathBuf,
    runtime: Helper,
    containers: HashMap<String, Container>,
    shutdown: bool,
}

/// `berth-supervisor <dir> <runtime root>`: runs until shut down or killed.
pub fn main(args: &[String]) -> i32 {
    let (Some(dir), Some(root)) = (args.first(), args.get(1)) else {
        eprintln!("usage: berth-supervisor <dir> <runtime-root>");
        return 2;
    };
    match run(Path::new(dir), Path::new(root)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("supervisor {dir}: {e}");
            1
        }
    }
}

fn run(dir: &Path, root: &Path) -> Result<(), String> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!("becoming a subreaper: {}", Errno::last()));
    }
    let runtime = Helper::open(root)?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .map_err(|e| format!("blocking SIGCHLD: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    // Socket paths are limited to 108 bytes: bind relative to our dir.
    std::env::set_current_dir(dir).map_err(|e| format!("entering {}: {e}", dir.display()))?;
    let socket = PathBuf::from(SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("binding {}: {e}", dir.join(SOCKET).display()))?;
    let mut supervisor = Supervisor {
        dir: dir.to_path_buf(),
        runtime,
        containers: HashMap::new(),
        shutdown: false,
    };
    while !supervisor.shutdown {
        supervisor.poll_once(&listener, &signals)?;
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

impl Supervisor {
    fn poll_once(&mut self, listener: &UnixListener, signals: &SignalFd) -> Result<(), String> {
        // Order: listener, signalfd, then every container's stdio.
        let (slots, events) = {
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            let mut slots = Vec::new();
            for (id, container) in &self.containers {
                for (fd, flags, slot) in container.io.interests() {
                    fds.push(PollFd::new(fd, flags));
                    slots.push((id.clone(), slot));
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            let events: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            (slots, events)
        };
        // Output first, so that a container's last words are logged before
        // its exit is reported. Slots of one container are handled from the last
        // to the first, so removing an output does not shift the ones still due.
        for ((id, slot), events) in slots.into_iter().zip(&events[2..]).rev() {
            if events.is_empty() {
                continue;
            }
            if let Some(container) = self.containers.get_mut(&id) {
                container.io.ready(slot, *events);
            }
        }
        if !events[1].is_empty() {
            while let Ok(Some(_)) = signals.read_signal() {}
            self.reap();
        }
        if !events[0].is_empty()
            && let Ok((stream, _)) = listener.accept()
        {
            self.serve(stream);
        }
        Ok(())
    }

    /// Reaps every exited child; records containers' exits on disk first.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    self.exited(pid.as_raw(), 128 + signal as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn exited(&mut self, pid: i32, code: i32) {
        let Some((id, container)) = self
            .containers
            .iter_mut()
            .find(|(_, c)| c.pid == pid && c.exit.is_none())
        else {
            return;
        };
        let oom_killed = code == 128 + libc::SIGKILL
            && self
                .runtime
                .run(&RuntimeOp::OomKilled { id: id.clone() }, None)
                .unwrap_or(false);
        let exit = Exit {
            code,
            finished_at: now_nanos(),
            oom_killed,
        };
        if let Err(e) = write_atomic(&exit_file(&self.dir, id), &exit) {
            eprintln!("container {id}: recording exit: {e}");
        }
        container.exit = Some(exit);
    }

    fn serve(&mut self, stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        let request = match reader.read_line(&mut line) {
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(request) if request.version == VERSION => Ok(request.op),
                Ok(request) => Err(Response::failed(format!(
                    "protocol version {} not supported (supervisor speaks {VERSION})",
                    request.version
                ))),
                Err(e) => Err(Response::failed(format!("bad request: {e}"))),
            },
            Err(e) => Err(Response::failed(format!("reading request: {e}"))),
        };
        let leftover = reader.buffer().to_vec();
        drop(reader);
        let response = match request {
            Ok(Op::Attach {
                id,
                stdin,
                stdout,
                stderr,
            }) => {
                return self.attach(stream, leftover, &id, [stdin, stdout, stderr]);
            }
            Ok(op) => self.handle(op),
            Err(response) => response,
        };
        answer(&stream, &response);
    }

    /// Answers the attach request, then keeps the connection for the container's stdio.
    fn attach(&mut self, stream: UnixStream, leftover: Vec<u8>, id: &str, wanted: [bool; 3]) {
        let Some(container) = self.containers.get_mut(id) else {
            answer(
                &stream,
                &Response::failed(format!("container {id} not found")),
            );
            return;
        };
        if container.exit.is_some() {
            answer(
                &stream,
                &Response::failed(format!("container {id} is not running")),
            );
            return;
        }
        answer(&stream, &Response::default());
        let [stdin, stdout, stderr] = wanted;
        if let Err(e) = container.io.attach(stream, leftover, stdin, stdout, stderr) {
            eprintln!("container {id}: attaching: {e}");
        }
    }

    fn handle(&mut self, op: Op) -> Response {
        match op {
            Op::Create {
                id,
                bundle,
                log_path,
                systemd_cgroup,
                stdio,
            } => self.create(id, bundle, &log_path, systemd_cgroup, stdio),
            Op::Start { id } => self.with(&id, |s, id| {
                s.runtime
                    .run::<()>(&RuntimeOp::Start { id: id.into() }, None)?;
                if let Some(c) = s.containers.get_mut(id) {
                    c.started_at = Some(now_nanos());
                }
                Ok(())
            }),
            Op::Kill { id, signal } => self.with(&id, |s, id| {
                if s.containers.get(id).is_some_and(|c| c.exit.is_some()) {
                    return Ok(());
                }
                Signal::try_from(signal).map_err(|e| format!("signal {signal}: {e}"))?;
                s.runtime.run(
                    &RuntimeOp::Kill {
                        id: id.into(),
                        signal,
                    },
                    None,
                )
            }),
            Op::Delete { id } => {
                let result = self
                    .runtime
                    .run::<()>(&RuntimeOp::Delete { id: id.clone() }, None);
                self.containers.remove(&id);
                let _ = std::fs::remove_file(exit_file(&self.dir, &id));
                match result {
                    Ok(()) => Response::default(),
                    Err(e) => Response::failed(e),
                }
            }
            Op::Status { id } => match self.containers.get(&id) {
                Some(c) => Response {
                    pid: Some(c.pid),
                    started_at: c.started_at,
                    exit: c.exit,
                    ..Response::default()
                },
                None => match read_exit(&self.dir, &id) {
                    Some(exit) => Response {
                        exit: Some(exit),
                        ..Response::default()
                    },
                    None => Response::failed(format!("container {id} not found")),
                },
            },
            Op::Shutdown => {
                self.shutdown = true;
                Response::default()
            }
            Op::ReopenLog { id } => self.with(&id, |s, id| match s.containers.get(id) {
                Some(c) => c.io.reopen_log(),
                None => Err(format!("container {id} not found")),
            }),
            // Served by `serve`, which keeps the connection.
            Op::Attach { id, .. } => {
                Response::failed(format!("attach to {id} needs its own connection"))
            }
        }
    }

    fn with(
        &mut self,
        id: &str,
        action: impl FnOnce(&mut Self, &str) -> Result<(), String>,
    ) -> Response {
        if !self.containers.contains_key(id) {
            return Response::failed(format!("container {id} not found"));
        }
        match action(self, id) {
            Ok(()) => self.handle(Op::Status { id: id.to_string() }),
            Err(e) => Response::failed(e),
        }
    }

    fn create(
        &mut self,
        id: String,
        bundle: PathBuf,
        log_path: &Path,
        systemd: bool,
        stdio: Stdio,
    ) -> Response {
        if self.containers.contains_key(&id) {
            return Response::failed(format!("container {id} already exists"));
        }
        let made = open_log(log_path).and_then(|log| {
            if stdio.tty {
                self.create_on_terminal(id.clone(), bundle, systemd, log, stdio)
            } else {
                let op = RuntimeOp::Create {
                    id: id.clone(),
                    bundle,
                    systemd_cgroup: systemd,
                    console_socket: None,
                };
                self.create_on_pipes(&op, log, stdio)
            }
        });
        match made {
            Ok((pid, io)) => {
                self.containers.insert(
                    id,
                    Container {
                        pid,
                        started_at: None,
                        exit: None,
                        io,
                    },
                );
                Response {
                    pid: Some(pid),
                    ..Response::default()
                }
            }
            Err(e) => Response::failed(e),
        }
    }

    /// The container's stdout/stderr (and stdin when asked) are pipes to us.
    fn create_on_pipes(
        &self,
        op: &RuntimeOp,
        log: LogWriter,
        stdio: Stdio,
    ) -> Result<(i32, ContainerIo), String> {
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdin = if stdio.stdin { Some(pipe()?) } else { None };
        // The container init inherits the helper's stdio: the pipes.
        let child_stdio = ContainerStdio {
            stdin: stdin.as_ref().map(|(read, _)| read.as_fd()),
            stdout: out_w.as_fd(),
            stderr: err_w.as_fd(),
        };
        let pid = self.runtime.run(op, Some(child_stdio));
        drop((out_w, err_w));
        let pid = pid?;
        let stdin = stdin.map(|(_, write)| write);
        let io = ContainerIo::pipes(log, out_r, err_r, stdin, stdio)
            .map_err(|e| format!("container stdio: {e}"))?;
        Ok((pid, io))
    }

    /// The container runs on a pty; its master comes back over a console socket.
    fn create_on_terminal(
        &self,
        id: String,
        bundle: PathBuf,
        systemd_cgroup: bool,
        log: LogWriter,
        stdio: Stdio,
    ) -> Result<(i32, ContainerIo), String> {
        // Relative to our dir (the cwd): socket paths are limited to 108 bytes.
        let socket = PathBuf::from(format!("console-{id}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|e| format!("console socket: {e}"))?;
        let op = RuntimeOp::Create {
            id,
            bundle,
            systemd_cgroup,
            console_socket: Some(socket.clone()),
        };
        let created = self.runtime.run(&op, None);
        let master = created.as_ref().ok().map(|_| receive_pty(&listener));
        let _ = std::fs::remove_file(&socket);
        let pid = created?;
        let master = master.unwrap_or_else(|| Err("no pty".into()))?;
        let io = ContainerIo::terminal(log, master, stdio)
            .map_err(|e| format!("container stdio: {e}"))?;
        Ok((pid, io))
    }
}

/// The pty master the container's init sent (it connected during the create).
fn receive_pty(listener: &UnixListener) -> Result<OwnedFd, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("console socket: {e}"))?;
    let (connection, _) = listener
        .accept()
        .map_err(|e| format!("the container did not connect to its console socket: {e}"))?;
    connection
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("console socket: {e}"))?;
    crate::oci::console::recv_fd(&OwnedFd::from(connection)).map_err(|e| e.to_string())
}

fn open_log(path: &Path) -> Result<LogWriter, String> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    LogWriter::open(path, DEFAULT_MAX_LINE_SIZE).map_err(|e| e.to_string())
}

fn answer(mut stream: &UnixStream, response: &Response) {
    let mut out = serde_json::to_vec(response).unwrap_or_default();
    out.push(b'\n');
    let _ = stream.write_all(&out);
}

fn write_atomic(path: &Path, exit: &Exit) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(exit).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
