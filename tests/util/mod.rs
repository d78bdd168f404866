//! Helpers for tests that drive the built binary: start a relay, talk raw protocol to it.
#![allow(dead_code, unused_macros)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use relay_sim::client::Client;
use relay_sim::protocol::{self, Decoder, ErrorCode, Kind};
use relay_sim::sys::{Addr, Stream};

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("relay-sim")
}

/// Transports every relay test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp,
}

/// Runs each named test body once per transport and backend: `fn body(t: Transport, backend: &str)`.
macro_rules! on_every_relay {
    ($($name:ident),* $(,)?) => {
        mod unix {
            $(#[test] fn $name() { for b in super::BACKENDS { super::$name(super::Transport::Unix, b) } })*
        }
        mod tcp {
            $(#[test] fn $name() { for b in super::BACKENDS { super::$name(super::Transport::Tcp, b) } })*
        }
    };
}

/// Backends every relay test runs under (one test body, every backend).
pub const BACKENDS: &[&str] = relay_sim::relay::backend::NAMES;

/// A relay process, stopped with SIGTERM and reaped on drop.
pub struct RelayProc {
    pub child: Child,
    pub addr: Addr,
    pub dir: tempfile::TempDir,
    /// Receives the relay's whole stderr once the relay closes it (at exit).
    stderr_done: std::sync::mpsc::Receiver<String>,
}

/// Reads a child's stderr to its end on a thread; the text arrives when the child exits.
pub fn collect_stderr(mut e: ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    rx
}

/// A fresh address for a relay: a socket file in `dir`, or any free loopback port.
fn listen_in(t: Transport, dir: &tempfile::TempDir) -> String {
    match t {
        Transport::Unix => dir.path().join("relay.sock").display().to_string(),
        Transport::Tcp => "127.0.0.1:0".to_string(),
    }
}

impl RelayProc {
    /// Starts `relay-sim relay` on a fresh address and waits until it listens.
    #[track_caller]
    pub fn start(t: Transport, backend: &str, extra: &[&str]) -> RelayProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let listen = listen_in(t, &dir);
        Self::start_at(&listen, dir, backend, extra)
    }

    /// Starts a relay listening on `listen`, keeping `dir` alive with it.
    #[track_caller]
    pub fn start_at(
        listen: &str,
        dir: tempfile::TempDir,
        backend: &str,
        extra: &[&str],
    ) -> RelayProc {
        let mut cmd = Command::new(bin());
        cmd.args(["relay", "--quiet", "--listen", listen, "--backend", backend])
            .args(extra);
        Self::launch(cmd, dir)
    }

    /// Starts a relay that logs (no `--quiet`), with its open-files limit set to `nofile`
    /// when given; its log is what [`RelayProc::wait_exit`] returns.
    #[track_caller]
    pub fn start_logged(t: Transport, backend: &str, nofile: Option<u32>) -> RelayProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let listen = listen_in(t, &dir);
        // The shell sets the limit for the relay alone (the test process keeps its own).
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(match nofile {
                Some(n) => format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                None => "exec \"$0\" \"$@\"".to_string(),
            })
            .arg(bin())
            .args(["relay", "--listen", &listen, "--backend", backend]);
        Self::launch(cmd, dir)
    }

    /// Spawns `cmd` (a relay) and waits until it listens.
    #[track_caller]
    fn launch(mut cmd: Command, dir: tempfile::TempDir) -> RelayProc {
        // A test process killed mid-test (a timeout of cargo-mutants) takes its relays along.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relay");
        // The relay prints `listening on ADDR` once it accepts: readiness, not a sleep.
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("read relay stdout");
        let Some(bound) = line.trim().strip_prefix("listening on ") else {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            let _ = child.wait();
            panic!("relay did not start: stdout {line:?}, stderr {err:?}");
        };
        let addr = Addr::parse(bound).expect("bound address parses");
        let stderr_done = collect_stderr(child.stderr.take().expect("stderr"));
        RelayProc {
            child,
            addr,
            dir,
            stderr_done,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to the relay.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// Waits (bounded) for the relay to exit; returns its exit code and its stderr.
    /// The relay's stderr reaching end of file is the readiness signal for its exit.
    #[track_caller]
    pub fn wait_exit(&mut self) -> (Option<i32>, String) {
        let err = self
            .stderr_done
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("relay did not exit within {WAIT:?}"));
        let st = self.child.wait().expect("wait");
        (st.code(), err)
    }

    /// True while the relay process runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Peak resident memory of the relay (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// A client registered under `name`.
    #[track_caller]
    pub fn client(&self, name: &str) -> Client {
        Client::connect(&self.addr, name).unwrap_or_else(|e| panic!("client {name}: {e}"))
    }

    /// A raw connection with read/write timeouts.
    #[track_caller]
    pub fn raw(&self) -> Raw {
        Raw::connect(&self.addr)
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// A value from /proc/PID/status in KiB.
pub fn proc_status_kib(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing in /proc/{pid}/status"))
}

/// A relay->client frame as a test sees it (shared with the conformance suite).
pub use relay_sim::conform::Got;

/// A raw protocol connection: write any bytes, read frames back.
pub struct Raw {
    pub stream: Stream,
    dec: Decoder,
}

impl Raw {
    #[track_caller]
    pub fn connect(addr: &Addr) -> Raw {
        let stream = Stream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.set_write_timeout(Some(WAIT)).expect("timeout");
        Raw {
            stream,
            dec: Decoder::new(u32::MAX),
        }
    }

    #[track_caller]
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to relay");
    }

    /// Sends HELLO and returns what came back.
    #[track_caller]
    pub fn hello(&mut self, name: &[u8]) -> Got {
        let mut b = Vec::new();
        protocol::put_hello(&mut b, name);
        self.write(&b);
        self.next()
    }

    #[track_caller]
    pub fn send(&mut self, dst: &[u8], payload: &[u8]) {
        let mut b = Vec::new();
        protocol::put_send(&mut b, dst, payload);
        self.write(&b);
    }

    /// The next frame, or `Eof`; panics on timeout.
    #[track_caller]
    pub fn next(&mut self) -> Got {
        loop {
            if let Some(f) = self.dec.next_frame().expect("relay frames decode") {
                return Got::from(f.relay().expect("relay frame parses"));
            }
            match self.dec.read_from(&mut self.stream) {
                Ok(0) => return Got::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Got::Eof,
                Err(e) => panic!("reading from the relay: {e}"),
            }
        }
    }

    /// Expects an ERROR with `code`, then the relay closing the connection.
    #[track_caller]
    pub fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.next() {
            Got::Error(c, text) => {
                assert_eq!(c, code as u16, "expected {code}, got code {c}: {text}");
                assert_eq!(self.next(), Got::Eof, "the relay must close after ERROR");
                text
            }
            other => panic!("expected ERROR {code}, got {other:?}"),
        }
    }
}

/// A raw connection registered under `name`.
#[track_caller]
pub fn registered(r: &RelayProc, name: &str) -> Raw {
    let mut c = r.raw();
    assert_eq!(
        c.hello(name.as_bytes()),
        Got::Welcome(name.as_bytes().to_vec())
    );
    c
}

/// Raw frame bytes: `len | type | body` with the given type byte.
pub fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(kind);
    v.extend_from_slice(body);
    v
}

/// SEND bytes.
pub fn send_bytes(dst: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    protocol::put_send(&mut b, dst, payload);
    b
}

pub const SEND: u8 = Kind::Send as u8;

/// Writes all of `bytes` on a non-blocking copy of the stream. Sends `true` on `held` the first
/// time the socket stays unwritable for 300 ms (the relay has stopped reading this sender), or
/// `false` once everything is written without that. The 300 ms only decides when the test
/// looks; it cannot make a test pass or fail on its own.
pub fn flood(c: &mut Raw, bytes: &[u8], held: std::sync::mpsc::Sender<bool>) {
    use std::os::fd::AsFd;
    c.stream.set_nonblocking(true).expect("nonblocking");
    let (mut off, mut told) = (0, false);
    while off < bytes.len() {
        match c.stream.write(&bytes[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let (_, w) = relay_sim::client::wait_fd(
                    &c.stream.as_fd(),
                    false,
                    true,
                    Some(Duration::from_millis(300)),
                )
                .expect("poll");
                if !w && !told {
                    told = true;
                    let _ = held.send(true);
                }
            }
            Err(e) => panic!("flooder: {e}"),
        }
    }
    if !told {
        let _ = held.send(false);
    }
    c.stream.set_nonblocking(false).expect("blocking");
}

/// Waits (at most 20 s) for `pid` to exit, whoever's child it is: a pidfd becomes readable
/// when it does. True if it has exited (or was already gone).
pub fn exits(pid: i32) -> bool {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return true; // no such process
    }
    // SAFETY: a fresh fd this test owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20_000u16)).unwrap() == 1
}
