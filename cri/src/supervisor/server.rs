//! The supervisor process: one poll loop over the request socket, SIGCHLD
//! (a signalfd) and the containers' output pipes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, dup, dup2_stderr, dup2_stdout, pipe2};

use super::SOCKET;
use super::log::{LineSplitter, LogFile};
use super::protocol::{Exit, Op, Request, Response, VERSION, exit_file, now_nanos, read_exit};
use crate::oci::container::{self, create::CreateOptions};
use crate::oci::state::StateStore;

struct Output {
    pipe: std::fs::File,
    splitter: LineSplitter,
}

struct Container {
    pid: i32,
    started_at: Option<i64>,
    exit: Option<Exit>,
    log: LogFile,
    outputs: Vec<Output>,
}

struct Supervisor {
    dir: PathBuf,
    runtime: StateStore,
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
        runtime: StateStore::new(root),
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
        // Order: listener, signalfd, then every open output pipe.
        let pipes: Vec<(String, usize, i32)> = self
            .containers
            .iter()
            .flat_map(|(id, c)| {
                c.outputs
                    .iter()
                    .enumerate()
                    .map(move |(i, o)| (id.clone(), i, o.pipe.as_raw_fd()))
            })
            .collect();
        let mut ready = {
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            let borrowed: Vec<_> = self
                .containers
                .values()
                .flat_map(|c| c.outputs.iter().map(|o| o.pipe.as_fd()))
                .collect();
            fds.extend(
                borrowed
                    .into_iter()
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<bool>>()
        };
        // Output first, so that a container's last words are logged before
        // its exit is reported.
        for (n, (id, index, _)) in pipes.iter().enumerate() {
            if ready[2 + n] {
                self.drain(id, *index);
            }
        }
        if ready[1] {
            while let Ok(Some(_)) = signals.read_signal() {}
            self.reap();
        }
        if std::mem::take(&mut ready[0])
            && let Ok((stream, _)) = listener.accept()
        {
            self.serve(stream);
        }
        Ok(())
    }

    /// Copies what a pipe has into the log; closes it at end of stream.
    fn drain(&mut self, id: &str, index: usize) {
        let Some(container) = self.containers.get_mut(id) else {
            return;
        };
        let Some(output) = container.outputs.get_mut(index) else {
            return;
        };
        let mut buf = [0u8; 8192];
        match output.pipe.read(&mut buf) {
            Ok(0) | Err(_) => {
                output.splitter.finish(&mut container.log);
                container.outputs.remove(index);
            }
            Ok(n) => output.splitter.feed(&buf[..n], &mut container.log),
        }
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
        let dir = self.dir.clone();
        let runtime = StateStore::new(self.runtime.root());
        let Some((id, container)) = self
            .containers
            .iter_mut()
            .find(|(_, c)| c.pid == pid && c.exit.is_none())
        else {
            return;
        };
        let oom_killed = code == 128 + libc::SIGKILL && oom_killed(&runtime, id);
        let exit = Exit {
            code,
            finished_at: now_nanos(),
            oom_killed,
        };
        if let Err(e) = write_atomic(&exit_file(&dir, id), &exit) {
            eprintln!("container {id}: recording exit: {e}");
        }
        container.exit = Some(exit);
    }

    fn serve(&mut self, stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        let response = match reader.read_line(&mut line) {
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(request) if request.version == VERSION => self.handle(request.op),
                Ok(request) => Response::failed(format!(
                    "protocol version {} not supported (supervisor speaks {VERSION})",
                    request.version
                )),
                Err(e) => Response::failed(format!("bad request: {e}")),
            },
            Err(e) => Response::failed(format!("reading request: {e}")),
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        let _ = (&stream).write_all(&out);
    }

    fn handle(&mut self, op: Op) -> Response {
        match op {
            Op::Create {
                id,
                bundle,
                log_path,
                systemd_cgroup,
            } => self.create(id, bundle, &log_path, systemd_cgroup),
            Op::Start { id } => self.with(&id, |s, id| {
                container::start::start(&s.runtime, id).map_err(|e| e.to_string())?;
                if let Some(c) = s.containers.get_mut(id) {
                    c.started_at = Some(now_nanos());
                }
                Ok(())
            }),
            Op::Kill { id, signal } => self.with(&id, |s, id| {
                if s.containers.get(id).is_some_and(|c| c.exit.is_some()) {
                    return Ok(());
                }
                let signal =
                    Signal::try_from(signal).map_err(|e| format!("signal {signal}: {e}"))?;
                container::kill::kill(&s.runtime, id, signal, false).map_err(|e| e.to_string())
            }),
            Op::Delete { id } => {
                let result = container::delete::delete(&self.runtime, &id, true);
                self.containers.remove(&id);
                let _ = std::fs::remove_file(exit_file(&self.dir, &id));
                match result {
                    Ok(()) => Response::default(),
                    // Already gone from the runtime is what delete wants.
                    Err(e) if !self.runtime.dir(&id).exists() => {
                        let _ = e;
                        Response::default()
                    }
                    Err(e) => Response::failed(e.to_string()),
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
            Op::ReopenLog { id } => self.with(&id, |s, id| {
                let reopened = s.containers.get_mut(id).is_some_and(|c| c.log.reopen());
                if reopened {
                    Ok(())
                } else {
                    Err("reopening the log file failed".into())
                }
            }),
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

    fn create(&mut self, id: String, bundle: PathBuf, log_path: &Path, systemd: bool) -> Response {
        if self.containers.contains_key(&id) {
            return Response::failed(format!("container {id} already exists"));
        }
        let made = (|| -> Result<(i32, Vec<Output>), String> {
            let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            // The container init inherits our stdout/stderr: point them at
            // the pipes for the create, then restore them.
            let saved = (dup(std::io::stdout()), dup(std::io::stderr()));
            let (Ok(saved_out), Ok(saved_err)) = saved else {
                return Err("saving stdio failed".into());
            };
            let redirected = dup2_stdout(&out_w).and_then(|()| dup2_stderr(&err_w));
            let result = redirected
                .map_err(|e| format!("redirecting stdio: {e}"))
                .and_then(|()| {
                    container::create::create(
                        &self.runtime,
                        &CreateOptions {
                            id: id.clone(),
                            bundle: bundle.clone(),
                            systemd_cgroup: systemd,
                            ..CreateOptions::default()
                        },
                    )
                    .map_err(|e| e.to_string())
                });
            let _ = dup2_stdout(&saved_out);
            let _ = dup2_stderr(&saved_err);
            drop((out_w, err_w));
            let state = result?;
            let outputs = [(out_r, "stdout"), (err_r, "stderr")]
                .into_iter()
                .map(|(fd, stream): (OwnedFd, _)| Output {
                    pipe: std::fs::File::from(fd),
                    splitter: LineSplitter::new(stream),
                })
                .collect();
            Ok((state.pid, outputs))
        })();
        match made {
            Ok((pid, outputs)) => {
                self.containers.insert(
                    id,
                    Container {
                        pid,
                        started_at: None,
                        exit: None,
                        log: LogFile::open(log_path),
                        outputs,
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
}

/// Whether the container's cgroup recorded an OOM kill.
fn oom_killed(runtime: &StateStore, id: &str) -> bool {
    runtime
        .load(id)
        .ok()
        .and_then(|state| state.cgroup_manager().ok())
        .and_then(|cgroup| cgroup.stats().ok())
        .is_some_and(|stats| stats.memory.oom_kill > 0)
}

fn write_atomic(path: &Path, exit: &Exit) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(exit).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
