//! The supervisor process: one poll loop over the request socket, SIGCHLD
//! (a signalfd) and the containers' output pipes. It runs in its directory
//! (socket paths are limited to 108 bytes), so its files are named relative to it.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::helper::{ContainerStdio, Helper};
use crate::json::Value;
use crate::log::{DEFAULT_MAX_LINE_SIZE, LogWriter};
use crate::stdio::{ContainerIo, POLLIN};
use crate::sys::{self, ChildExit, Errno, Fd};
use crate::wire::{Exit, Op, Response, RuntimeOp, Stdio, parse_request};

/// The socket in a supervisor's directory (`berth_cri::supervisor::SOCKET`).
const SOCKET: &[u8] = crate::names::SOCKET.as_bytes();
/// How long a client may take to send its request.
const REQUEST_TIMEOUT_SECONDS: i64 = 10;
/// The most a request line may hold.
const REQUEST_MAX: usize = 64 * 1024;

struct Container {
    pid: i32,
    started_at: Option<i64>,
    exit: Option<Exit>,
    io: ContainerIo,
}

struct Supervisor {
    runtime: Helper,
    containers: BTreeMap<String, Container>,
    shutdown: bool,
}

/// `berth-supervisor <dir> <runtime root>`: runs until shut down or killed.
pub fn main(args: &[&[u8]], envp: *const *const u8) -> i32 {
    let [dir, root] = args else {
        crate::report("usage: berth-supervisor <dir> <runtime-root>");
        return 2;
    };
    match run(dir, root, envp) {
        Ok(()) => 0,
        Err(e) => {
            crate::report(&format!("supervisor {}: {e}", String::from_utf8_lossy(dir)));
            1
        }
    }
}

fn run(dir: &[u8], root: &[u8], envp: *const *const u8) -> Result<(), String> {
    sys::become_subreaper().map_err(|e| format!("becoming a subreaper: {e}"))?;
    // A client that goes away must not end us with SIGPIPE.
    sys::ignore_signal(libc::SIGPIPE).map_err(|e| format!("ignoring SIGPIPE: {e}"))?;
    let runtime = Helper::open(root, envp)?;
    let children = sys::signal_set(&[libc::SIGCHLD]);
    sys::set_signal_mask(libc::SIG_BLOCK, children)
        .map_err(|e| format!("blocking SIGCHLD: {e}"))?;
    let signals = sys::signalfd(children).map_err(|e| format!("signalfd: {e}"))?;
    sys::chdir(dir).map_err(|e| format!("entering {}: {e}", String::from_utf8_lossy(dir)))?;
    let _ = sys::unlink(SOCKET);
    let listener = sys::listen_unix(SOCKET).map_err(|e| {
        format!(
            "binding {}/supervisor.sock: {e}",
            String::from_utf8_lossy(dir)
        )
    })?;
    let mut supervisor = Supervisor {
        runtime,
        containers: BTreeMap::new(),
        shutdown: false,
    };
    while !supervisor.shutdown {
        supervisor.poll_once(&listener, &signals)?;
    }
    let _ = sys::unlink(SOCKET);
    Ok(())
}

fn poll_fd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

impl Supervisor {
    fn poll_once(&mut self, listener: &Fd, signals: &Fd) -> Result<(), String> {
        // Order: listener, signalfd, then every container's stdio.
        let mut fds = alloc::vec![
            poll_fd(listener.raw(), POLLIN),
            poll_fd(signals.raw(), POLLIN)
        ];
        let mut slots = Vec::new();
        for (id, container) in &self.containers {
            for (fd, events, slot) in container.io.interests() {
                fds.push(poll_fd(fd, events));
                slots.push((id.clone(), slot));
            }
        }
        match sys::poll(&mut fds, -1) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        // Output first, so that a container's last words are logged before
        // its exit is reported. Slots of one container are handled from the last
        // to the first, so removing an output does not shift the ones still due.
        for ((id, slot), fd) in slots.into_iter().zip(&fds[2..]).rev() {
            if fd.revents == 0 {
                continue;
            }
            if let Some(container) = self.containers.get_mut(&id) {
                container.io.ready(slot, fd.revents);
            }
        }
        if fds[1].revents != 0 {
            let mut info = [0u8; core::mem::size_of::<libc::signalfd_siginfo>()];
            while matches!(sys::read(signals.raw(), &mut info), Ok(n) if n > 0) {}
            self.reap();
        }
        if fds[0].revents != 0
            && let Ok(stream) = sys::accept(listener.raw())
        {
            self.serve(stream);
        }
        Ok(())
    }

    /// Reaps every exited child; records containers' exits on disk first.
    fn reap(&mut self) {
        while let Ok(Some((pid, exit))) = sys::wait(-1, false) {
            let code = match exit {
                ChildExit::Exited(code) => code,
                ChildExit::Signaled(signal) => 128 + signal,
            };
            self.exited(pid, code);
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
        container.io.drain_before_exit();
        let oom_killed = code == 128 + libc::SIGKILL
            && self
                .runtime
                .run(&RuntimeOp::OomKilled { id }, None)
                .is_ok_and(|killed| killed == Value::Bool(true));
        let exit = Exit {
            code,
            finished_at: sys::now_nanos(),
            oom_killed,
        };
        if let Err(e) = write_exit(id, exit) {
            crate::report(&format!("container {id}: recording exit: {e}"));
        }
        container.exit = Some(exit);
    }

    fn serve(&mut self, stream: Fd) {
        let _ = sys::set_read_timeout(stream.raw(), REQUEST_TIMEOUT_SECONDS);
        let (line, leftover) = match read_line(&stream) {
            Ok(read) => read,
            Err(e) => {
                answer(&stream, &Response::failed(format!("reading request: {e}")));
                return;
            }
        };
        let response = match parse_request(&line) {
            Ok(Op::Attach {
                id,
                stdin,
                stdout,
                stderr,
            }) => {
                return self.attach(stream, leftover, &id, [stdin, stdout, stderr]);
            }
            Ok(op) => self.handle(op),
            Err(message) => Response::failed(message),
        };
        answer(&stream, &response);
    }

    /// Answers the attach request, then keeps the connection for the container's stdio.
    fn attach(&mut self, stream: Fd, leftover: Vec<u8>, id: &str, wanted: [bool; 3]) {
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
            crate::report(&format!("container {id}: attaching: {e}"));
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
            } => self.create(id, &bundle, &log_path, systemd_cgroup, stdio),
            Op::Start { id } => self.with(&id, |s, id| {
                expect_null(s.runtime.run(&RuntimeOp::Start { id }, None))?;
                if let Some(c) = s.containers.get_mut(id) {
                    c.started_at = Some(sys::now_nanos());
                }
                Ok(())
            }),
            Op::Kill { id, signal } => self.with(&id, |s, id| {
                if s.containers.get(id).is_some_and(|c| c.exit.is_some()) {
                    return Ok(());
                }
                // The signals the runtime knows: the standard ones.
                if !(1..=31).contains(&signal) {
                    return Err(format!("signal {signal}: {}", Errno::INVAL));
                }
                expect_null(s.runtime.run(&RuntimeOp::Kill { id, signal }, None))
            }),
            Op::Delete { id } => {
                let result = expect_null(self.runtime.run(&RuntimeOp::Delete { id: &id }, None));
                self.containers.remove(&id);
                let _ = sys::unlink(exit_file(&id).as_bytes());
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
                None => match read_exit(&id) {
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
            Op::ReopenLog { id } => self.with(&id, |s, id| match s.containers.get_mut(id) {
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
            Ok(()) => self.handle(Op::Status { id: id.into() }),
            Err(e) => Response::failed(e),
        }
    }

    fn create(
        &mut self,
        id: String,
        bundle: &str,
        log_path: &str,
        systemd_cgroup: bool,
        stdio: Stdio,
    ) -> Response {
        if self.containers.contains_key(&id) {
            return Response::failed(format!("container {id} already exists"));
        }
        let made = open_log(log_path).and_then(|log| {
            if stdio.tty {
                self.create_on_terminal(&id, bundle, systemd_cgroup, log, stdio)
            } else {
                let op = RuntimeOp::Create {
                    id: &id,
                    bundle,
                    systemd_cgroup,
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
        let pipe = || sys::pipe().map_err(|e| format!("pipe: {e}"));
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdin = if stdio.stdin { Some(pipe()?) } else { None };
        // The container init inherits the helper's stdio: the pipes.
        let child_stdio = ContainerStdio {
            stdin: stdin.as_ref().map(|(read, _)| read.raw()),
            stdout: out_w.raw(),
            stderr: err_w.raw(),
        };
        let pid = self.runtime.run(op, Some(child_stdio));
        drop((out_w, err_w));
        let pid = expect_pid(pid)?;
        let stdin = stdin.map(|(_, write)| write);
        let io = ContainerIo::pipes(log, out_r, err_r, stdin, stdio)
            .map_err(|e| format!("container stdio: {e}"))?;
        Ok((pid, io))
    }

    /// The container runs on a pty; its master comes back over a console socket.
    fn create_on_terminal(
        &self,
        id: &str,
        bundle: &str,
        systemd_cgroup: bool,
        log: LogWriter,
        stdio: Stdio,
    ) -> Result<(i32, ContainerIo), String> {
        let socket = format!("console-{id}.sock");
        let _ = sys::unlink(socket.as_bytes());
        let listener =
            sys::listen_unix(socket.as_bytes()).map_err(|e| format!("console socket: {e}"))?;
        let op = RuntimeOp::Create {
            id,
            bundle,
            systemd_cgroup,
            console_socket: Some(&socket),
        };
        let created = expect_pid(self.runtime.run(&op, None));
        let master = created.as_ref().ok().map(|_| receive_pty(&listener));
        let _ = sys::unlink(socket.as_bytes());
        let pid = created?;
        let master = master.unwrap_or_else(|| Err("no pty".into()))?;
        let io = ContainerIo::terminal(log, master, stdio)
            .map_err(|e| format!("container stdio: {e}"))?;
        Ok((pid, io))
    }
}

fn expect_null(result: Result<Value, String>) -> Result<(), String> {
    result.map(drop)
}

fn expect_pid(result: Result<Value, String>) -> Result<i32, String> {
    match result? {
        Value::Integer(pid) => {
            i32::try_from(pid).map_err(|_| format!("the runtime reported pid {pid}"))
        }
        _ => Err("the runtime reported no pid".into()),
    }
}

/// The pty master the container's init sent (it connected during the create).
fn receive_pty(listener: &Fd) -> Result<Fd, String> {
    sys::set_nonblocking(listener.raw()).map_err(|e| format!("console socket: {e}"))?;
    let connection = sys::accept(listener.raw())
        .map_err(|e| format!("the container did not connect to its console socket: {e}"))?;
    sys::set_read_timeout(connection.raw(), REQUEST_TIMEOUT_SECONDS)
        .map_err(|e| format!("console socket: {e}"))?;
    match sys::receive_fd(connection.raw()) {
        Ok(Some(master)) => Ok(master),
        Ok(None) => Err("no pty master received".into()),
        Err(e) => Err(format!("receiving the pty master: {e}")),
    }
}

/// Reads the request line; the bytes after it (attach frames) come back too.
fn read_line(stream: &Fd) -> sys::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let leftover = buf.split_off(end + 1);
            return Ok((buf, leftover));
        }
        if buf.len() > REQUEST_MAX {
            return Err(Errno::INVAL);
        }
        match sys::read(stream.raw(), &mut chunk) {
            Ok(0) => return Ok((buf, Vec::new())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

fn open_log(path: &str) -> Result<LogWriter, String> {
    if let Some(slash) = path.rfind('/') {
        create_dir_all(&path.as_bytes()[..slash]);
    }
    LogWriter::open(path, DEFAULT_MAX_LINE_SIZE)
}

/// Creates `dir` and its missing parents; failures show when the log is opened.
fn create_dir_all(dir: &[u8]) {
    if dir.is_empty() || sys::mkdir(dir, 0o777) != Err(Errno(libc::ENOENT)) {
        return;
    }
    if let Some(slash) = dir.iter().rposition(|b| *b == b'/') {
        create_dir_all(&dir[..slash]);
    }
    let _ = sys::mkdir(dir, 0o777);
}

fn answer(stream: &Fd, response: &Response) {
    let _ = sys::write_all(stream.raw(), &response.to_line());
}

/// The exit file of container `id` (`berth_cri::supervisor::protocol::exit_file`).
fn exit_file(id: &str) -> String {
    format!("{id}{}", crate::names::EXIT_FILE_SUFFIX)
}

fn write_exit(id: &str, exit: Exit) -> sys::Result<()> {
    let tmp = format!("{id}.tmp");
    let file = sys::open(
        tmp.as_bytes(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        0o666,
    )?;
    sys::write_all(file.raw(), &exit.to_json())?;
    sys::fsync(file.raw())?;
    sys::rename(tmp.as_bytes(), exit_file(id).as_bytes())
}

/// Reads an exit file (None when the container has not exited).
fn read_exit(id: &str) -> Option<Exit> {
    let file = sys::open(exit_file(id).as_bytes(), libc::O_RDONLY, 0).ok()?;
    let mut data = [0u8; 256];
    let n = sys::read(file.raw(), &mut data).ok()?;
    let value = crate::json::parse(&data[..n]).ok()?;
    let integer = |key| match value.get(key) {
        Some(Value::Integer(n)) => Some(*n),
        _ => None,
    };
    Some(Exit {
        code: i32::try_from(integer("code")?).ok()?,
        finished_at: integer("finished_at")?,
        oom_killed: matches!(value.get("oom_killed"), Some(Value::Bool(true))),
    })
}
