//! A container's stdio as the supervisor holds it: the output pipes (or the pty
//! master) copied into the CRI log and to attached clients, and the stdin pipe (or
//! the pty) fed by them. Every descriptor is non-blocking; the poll loop in
//! `server` asks [`ContainerIo::interests`] what to wait for and hands back what
//! became ready.

use alloc::string::String;
use alloc::vec::Vec;

use crate::frame;
use crate::log::{LineBuffer, LogStream, LogWriter};
use crate::sys::{self, Errno, Fd};
use crate::wire::Stdio;

/// Output queued for one attached client beyond which the container's output is not
/// read until the client caught up (backpressure instead of unbounded memory).
const ATTACH_HIGH_WATER: usize = 1024 * 1024;
/// Input queued for the container beyond which clients' stdin is not read.
const STDIN_HIGH_WATER: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

pub const POLLIN: i16 = libc::POLLIN;
pub const POLLOUT: i16 = libc::POLLOUT;
const POLL_GONE: i16 = libc::POLLIN | libc::POLLHUP | libc::POLLERR;

struct Output {
    fd: Fd,
    lines: LineBuffer,
}

struct Stdin {
    fd: Fd,
    pending: Vec<u8>,
    /// Close once `pending` is written (stdin_once after its attach ended).
    closing: bool,
}

struct Attacher {
    key: u64,
    stream: Fd,
    outgoing: Vec<u8>,
    incoming: Vec<u8>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

/// What a descriptor of a container is polled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Output(usize),
    Stdin,
    Attacher(u64),
}

pub struct ContainerIo {
    log: LogWriter,
    outputs: Vec<Output>,
    stdin: Option<Stdin>,
    /// The pty master of a tty container (for resizes).
    pty: Option<Fd>,
    stdin_once: bool,
    attachers: Vec<Attacher>,
    next_key: u64,
}

impl ContainerIo {
    /// Stdio of a container on pipes: `stdout`/`stderr` read ends, `stdin` write end.
    pub fn pipes(
        log: LogWriter,
        stdout: Fd,
        stderr: Fd,
        stdin: Option<Fd>,
        stdio: Stdio,
    ) -> sys::Result<Self> {
        let outputs = alloc::vec![
            output(stdout, LogStream::Stdout)?,
            output(stderr, LogStream::Stderr)?,
        ];
        let stdin = stdin.map(input).transpose()?;
        Ok(Self::new(log, outputs, stdin, None, stdio))
    }

    /// Stdio of a container on a pty: all output is stdout, input goes to the master.
    pub fn terminal(log: LogWriter, master: Fd, stdio: Stdio) -> sys::Result<Self> {
        let outputs = alloc::vec![output(master.try_clone()?, LogStream::Stdout)?];
        let stdin = if stdio.stdin {
            Some(input(master.try_clone()?)?)
        } else {
            None
        };
        Ok(Self::new(log, outputs, stdin, Some(master), stdio))
    }

    fn new(
        log: LogWriter,
        outputs: Vec<Output>,
        stdin: Option<Stdin>,
        pty: Option<Fd>,
        stdio: Stdio,
    ) -> Self {
        ContainerIo {
            log,
            outputs,
            stdin,
            pty,
            stdin_once: stdio.stdin_once,
            attachers: Vec::new(),
            next_key: 0,
        }
    }

    pub fn reopen_log(&mut self) -> Result<(), String> {
        self.log.reopen()
    }

    /// Connects a client (the daemon serving an attach) to the container's stdio. A
    /// client asking for stdin when the container has none (or it was closed) gets no
    /// stdin, as upstream.
    pub fn attach(
        &mut self,
        stream: Fd,
        leftover: Vec<u8>,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> sys::Result<()> {
        sys::set_nonblocking(stream.raw())?;
        let key = self.next_key;
        self.next_key += 1;
        self.attachers.push(Attacher {
            key,
            stream,
            outgoing: Vec::new(),
            incoming: leftover,
            stdin: stdin && self.stdin.as_ref().is_some_and(|s| !s.closing),
            stdout,
            stderr: stderr && self.pty.is_none(),
        });
        self.process_input(key);
        // Output that already ended ends the attach at once.
        self.finish_attachers();
        Ok(())
    }

    /// The descriptors to poll and for what.
    pub fn interests(&self) -> Vec<(i32, i16, Slot)> {
        let mut wanted = Vec::new();
        let attachers_keep_up = self
            .attachers
            .iter()
            .all(|a| a.outgoing.len() < ATTACH_HIGH_WATER);
        if attachers_keep_up {
            for (i, output) in self.outputs.iter().enumerate() {
                wanted.push((output.fd.raw(), POLLIN, Slot::Output(i)));
            }
        }
        let stdin_room = match &self.stdin {
            Some(stdin) => {
                if !stdin.pending.is_empty() {
                    wanted.push((stdin.fd.raw(), POLLOUT, Slot::Stdin));
                }
                stdin.pending.len() < STDIN_HIGH_WATER
            }
            None => true,
        };
        for attacher in &self.attachers {
            let mut events = 0;
            if stdin_room || !attacher.stdin {
                events |= POLLIN;
            }
            if !attacher.outgoing.is_empty() {
                events |= POLLOUT;
            }
            wanted.push((attacher.stream.raw(), events, Slot::Attacher(attacher.key)));
        }
        wanted
    }

    /// Acts on a descriptor poll found ready.
    pub fn ready(&mut self, slot: Slot, events: i16) {
        match slot {
            Slot::Output(i) => {
                self.drain_output(i);
            }
            Slot::Stdin => self.flush_stdin(),
            Slot::Attacher(key) => {
                if events & POLLOUT != 0 {
                    self.flush_attacher(key);
                }
                if events & POLL_GONE != 0 {
                    self.read_attacher(key);
                }
            }
        }
        self.finish_attachers();
    }

    /// Reads what the outputs hold now, before the container's exit is recorded, so
    /// that its last words are in the log first (the exit can be seen in the same
    /// poll round as the output that preceded it, or before it). Bounded, as a
    /// process the container left behind may keep writing.
    pub fn drain_before_exit(&mut self) {
        const MAX_CHUNKS: usize = 64;
        // From the last to the first: removing a finished output shifts only those done.
        for index in (0..self.outputs.len()).rev() {
            for _ in 0..MAX_CHUNKS {
                if !self.drain_output(index) {
                    break;
                }
            }
        }
    }

    /// Reads one chunk of an output: into the log and to the attached clients. At end
    /// of stream (or EIO: the pty's last slave closed) the output is done. True when
    /// it read something.
    fn drain_output(&mut self, index: usize) -> bool {
        let Some(output) = self.outputs.get_mut(index) else {
            return false;
        };
        let mut buf = [0u8; READ_CHUNK];
        let n = match sys::read(output.fd.raw(), &mut buf) {
            Ok(n) => n,
            Err(Errno::AGAIN | Errno::INTR) => return false,
            Err(_) => 0,
        };
        if n == 0 {
            if let Err(e) = output.lines.finish(&self.log) {
                crate::report(&e);
            }
            self.outputs.remove(index);
            return false;
        }
        // A full disk must not stop the container: the line is lost, loudly.
        if let Err(e) = output.lines.feed(&self.log, &buf[..n]) {
            crate::report(&e);
        }
        let (kind, stdout) = match output.lines.stream() {
            LogStream::Stdout => (frame::STDOUT, true),
            LogStream::Stderr => (frame::STDERR, false),
        };
        for attacher in &mut self.attachers {
            if (stdout && attacher.stdout) || (!stdout && attacher.stderr) {
                frame::encode(kind, &buf[..n], &mut attacher.outgoing);
            }
        }
        true
    }

    fn flush_stdin(&mut self) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        while !stdin.pending.is_empty() {
            match sys::write(stdin.fd.raw(), &stdin.pending) {
                Ok(n) => {
                    stdin.pending.drain(..n);
                }
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => {}
                Err(_) => {
                    // The container closed its stdin: nothing more can go in.
                    self.stdin = None;
                    return;
                }
            }
        }
        if stdin.closing {
            self.stdin = None;
        }
    }

    fn flush_attacher(&mut self, key: u64) {
        let Some(index) = self.attachers.iter().position(|a| a.key == key) else {
            return;
        };
        let attacher = &mut self.attachers[index];
        while !attacher.outgoing.is_empty() {
            match sys::write(attacher.stream.raw(), &attacher.outgoing) {
                Ok(n) => {
                    attacher.outgoing.drain(..n);
                }
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => {}
                Err(_) => {
                    self.detach(index);
                    return;
                }
            }
        }
    }

    fn read_attacher(&mut self, key: u64) {
        let Some(index) = self.attachers.iter().position(|a| a.key == key) else {
            return;
        };
        let attacher = &mut self.attachers[index];
        let mut buf = [0u8; READ_CHUNK];
        match sys::read(attacher.stream.raw(), &mut buf) {
            Ok(0) => self.detach(index),
            Ok(n) => {
                attacher.incoming.extend_from_slice(&buf[..n]);
                self.process_input(key);
            }
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(_) => self.detach(index),
        }
    }

    /// Acts on the complete frames an attached client sent.
    fn process_input(&mut self, key: u64) {
        let Some(index) = self.attachers.iter().position(|a| a.key == key) else {
            return;
        };
        loop {
            let attacher = &mut self.attachers[index];
            let (kind, payload) = match frame::take(&mut attacher.incoming) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    crate::report(&alloc::format!("attach: {e}"));
                    self.detach(index);
                    return;
                }
            };
            let uses_stdin = attacher.stdin;
            match kind {
                frame::STDIN if uses_stdin => {
                    if let Some(stdin) = self.stdin.as_mut().filter(|s| !s.closing) {
                        stdin.pending.extend_from_slice(&payload);
                        self.flush_stdin();
                    }
                }
                frame::STDIN_CLOSE if uses_stdin => self.stdin_ended(),
                frame::RESIZE => {
                    if let (Some(pty), Some((width, height))) =
                        (&self.pty, frame::parse_resize(&payload))
                    {
                        sys::set_window_size(pty.raw(), width, height);
                    }
                }
                _ => {}
            }
        }
    }

    /// The client of an attach that used stdin closed it or went away.
    fn stdin_ended(&mut self) {
        if !self.stdin_once {
            return;
        }
        if let Some(stdin) = self.stdin.as_mut() {
            stdin.closing = true;
        }
        for attacher in &mut self.attachers {
            attacher.stdin = false;
        }
        self.flush_stdin();
    }

    fn detach(&mut self, index: usize) {
        let attacher = self.attachers.remove(index);
        if attacher.stdin {
            self.stdin_ended();
        }
    }

    /// Once all output is read, attached clients are closed when they got it all:
    /// the attach ends with the container's output.
    fn finish_attachers(&mut self) {
        if self.outputs.is_empty() {
            self.attachers.retain(|a| !a.outgoing.is_empty());
        }
    }
}

fn output(fd: Fd, stream: LogStream) -> sys::Result<Output> {
    sys::set_nonblocking(fd.raw())?;
    Ok(Output {
        fd,
        lines: LineBuffer::new(stream),
    })
}

fn input(fd: Fd) -> sys::Result<Stdin> {
    sys::set_nonblocking(fd.raw())?;
    Ok(Stdin {
        fd,
        pending: Vec::new(),
        closing: false,
    })
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::{ErrorKind, Read, Write};
    use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;

    use nix::unistd::pipe;

    use super::*;

    fn fd(owned: impl Into<OwnedFd>) -> Fd {
        // SAFETY: the descriptor leaves its owner for the new one.
        unsafe { Fd::from_raw(owned.into().into_raw_fd()) }
    }

    struct Fixture {
        io: ContainerIo,
        stdout: Option<File>,
        stderr: Option<File>,
        stdin: File,
        log: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    fn fixture(stdin_once: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let writer = LogWriter::open(log.to_str().unwrap(), 0).unwrap();
        let (out_r, out_w) = pipe().unwrap();
        let (err_r, err_w) = pipe().unwrap();
        let (in_r, in_w) = pipe().unwrap();
        let stdio = Stdio {
            tty: false,
            stdin: true,
            stdin_once,
        };
        let io = ContainerIo::pipes(writer, fd(out_r), fd(err_r), Some(fd(in_w)), stdio).unwrap();
        sys::set_nonblocking(in_r.as_raw_fd()).unwrap();
        Fixture {
            io,
            stdout: Some(out_w.into()),
            stderr: Some(err_w.into()),
            stdin: in_r.into(),
            log,
            _dir: dir,
        }
    }

    /// One round of the supervisor's poll loop over this container only.
    fn pump(io: &mut ContainerIo) {
        let ready: Vec<(Slot, i16)> = {
            let interests = io.interests();
            let mut fds: Vec<libc::pollfd> = interests
                .iter()
                .map(|(fd, events, _)| libc::pollfd {
                    fd: *fd,
                    events: *events,
                    revents: 0,
                })
                .collect();
            sys::poll(&mut fds, 100).unwrap();
            interests
                .iter()
                .zip(&fds)
                .map(|((_, _, slot), fd)| (*slot, fd.revents))
                .filter(|(_, events)| *events != 0)
                .collect()
        };
        for (slot, events) in ready.into_iter().rev() {
            io.ready(slot, events);
        }
    }

    fn pump_until(
        io: &mut ContainerIo,
        what: &str,
        mut done: impl FnMut(&mut ContainerIo) -> bool,
    ) {
        for _ in 0..200 {
            if done(io) {
                return;
            }
            pump(io);
        }
        panic!("never happened: {what}");
    }

    /// Everything the client side of an attach received until the supervisor closed it.
    fn read_frames(mut client: &UnixStream) -> Vec<(u8, Vec<u8>)> {
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).unwrap();
        let mut frames = Vec::new();
        while let Some(frame) = frame::take(&mut wire).unwrap() {
            frames.push(frame);
        }
        frames
    }

    fn send(mut client: &UnixStream, kind: u8, payload: &[u8]) {
        let mut out = Vec::new();
        frame::encode(kind, payload, &mut out);
        client.write_all(&out).unwrap();
    }

    #[test]
    fn output_reaches_the_log_and_attached_clients_until_it_ends() {
        let mut f = fixture(false);
        let (client, server) = UnixStream::pair().unwrap();
        f.io.attach(fd(server), Vec::new(), false, true, true)
            .unwrap();
        f.stdout.as_mut().unwrap().write_all(b"out\n").unwrap();
        f.stderr.as_mut().unwrap().write_all(b"err\n").unwrap();
        drop((f.stdout.take(), f.stderr.take()));
        pump_until(&mut f.io, "outputs to end", |io| io.outputs.is_empty());
        pump_until(&mut f.io, "attach to end", |io| io.attachers.is_empty());
        let mut frames = read_frames(&client);
        frames.sort();
        assert_eq!(
            frames,
            [
                (frame::STDOUT, b"out\n".to_vec()),
                (frame::STDERR, b"err\n".to_vec())
            ]
        );
        let log = std::fs::read_to_string(&f.log).unwrap();
        assert!(
            log.contains(" stdout F out\n") && log.contains(" stderr F err\n"),
            "{log}"
        );
    }

    fn read_stdin(f: &mut Fixture) -> Option<Vec<u8>> {
        let mut got = vec![0u8; 64];
        match f.stdin.read(&mut got) {
            Ok(n) => Some(got[..n].to_vec()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn stdin_once_closes_the_containers_stdin_when_the_client_closes_it() {
        let mut f = fixture(true);
        let (client, server) = UnixStream::pair().unwrap();
        f.io.attach(fd(server), Vec::new(), true, true, false)
            .unwrap();
        send(&client, frame::STDIN, b"typed");
        send(&client, frame::STDIN_CLOSE, &[]);
        pump_until(&mut f.io, "stdin to be written and closed", |io| {
            io.stdin.is_none()
        });
        assert_eq!(read_stdin(&mut f), Some(b"typed".to_vec()));
        // The write end is gone: the container reads EOF.
        assert_eq!(read_stdin(&mut f), Some(Vec::new()));
    }

    #[test]
    fn without_stdin_once_stdin_outlives_the_attach() {
        let mut f = fixture(false);
        let (client, server) = UnixStream::pair().unwrap();
        f.io.attach(fd(server), Vec::new(), true, true, false)
            .unwrap();
        send(&client, frame::STDIN, b"one");
        send(&client, frame::STDIN_CLOSE, &[]);
        drop(client);
        pump_until(&mut f.io, "the client to go", |io| io.attachers.is_empty());
        assert!(f.io.stdin.is_some());
        assert_eq!(read_stdin(&mut f), Some(b"one".to_vec()));
        assert_eq!(read_stdin(&mut f), None, "stdin must stay open");
    }
}
