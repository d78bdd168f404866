//! The conformance suite: short, deterministic checks of docs/protocol.md, one clause each,
//! against any relay program that speaks protocol v1 (ours on each backend, or yours through
//! `--relay-cmd`), or one already running (`--relay-addr`). Each case gets a fresh relay
//! process (or, at an address, names of its own) and a deadline: a relay that hangs fails that
//! case, not the suite.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::protocol::{self, Decoder, ErrorCode, Kind, RelayFrame};
use crate::sys::{Addr, Stream};

/// How long one case may take before it fails.
pub const CASE_DEADLINE: Duration = Duration::from_secs(5);

/// A frame as a case sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// WELCOME name.
    Welcome(Vec<u8>),
    /// DELIVER src payload.
    Deliver(Vec<u8>, Vec<u8>),
    /// BOUNCE dst payload.
    Bounce(Vec<u8>, Vec<u8>),
    /// ERROR code text.
    Error(u16, String),
    /// The relay closed the connection.
    Eof,
}

impl From<RelayFrame<'_>> for Got {
    fn from(f: RelayFrame<'_>) -> Got {
        match f {
            RelayFrame::Welcome(n) => Got::Welcome(n.to_vec()),
            RelayFrame::Deliver { src, payload } => Got::Deliver(src.to_vec(), payload.to_vec()),
            RelayFrame::Bounce { dst, payload } => Got::Bounce(dst.to_vec(), payload.to_vec()),
            RelayFrame::Error { code, text } => {
                Got::Error(code, String::from_utf8_lossy(text).into_owned())
            }
        }
    }
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |b: &[u8]| {
            let t = String::from_utf8_lossy(&b[..b.len().min(24)]).into_owned();
            if b.len() > 24 {
                format!("{t:?}... ({} bytes)", b.len())
            } else {
                format!("{t:?}")
            }
        };
        match self {
            Got::Welcome(n) => write!(f, "WELCOME {}", s(n)),
            Got::Deliver(src, p) => write!(f, "DELIVER from {} {}", s(src), s(p)),
            Got::Bounce(d, p) => write!(f, "BOUNCE for {} {}", s(d), s(p)),
            Got::Error(c, t) => write!(f, "ERROR {} {t:?}", crate::client::code_name(*c)),
            Got::Eof => write!(f, "the connection closed"),
        }
    }
}

/// One connection to the relay under test, every read bounded by the case's deadline.
pub struct Peer {
    stream: Stream,
    dec: Decoder,
    deadline: Instant,
    /// Put before every name it sends to or registers, and taken off the names that come
    /// back (see [`Ctx`]).
    prefix: Vec<u8>,
}

type CaseResult = Result<(), String>;

impl Peer {
    fn connect(addr: &Addr, deadline: Instant, prefix: &str) -> Result<Peer, String> {
        let stream = Stream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _ = stream.set_read_timeout(Some(left));
        let _ = stream.set_write_timeout(Some(left));
        Ok(Peer {
            stream,
            dec: Decoder::new(u32::MAX),
            deadline,
            prefix: prefix.as_bytes().to_vec(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> CaseResult {
        self.stream.write_all(bytes).map_err(|e| {
            format!(
                "writing {} bytes to the relay: {e} (it stopped reading?)",
                bytes.len()
            )
        })
    }

    /// Writes all of `bytes`; tells `held` once the relay has stopped taking them (the socket
    /// stayed unwritable for 300 ms) or everything is written, whichever comes first. The
    /// 300 ms only decides when the case goes on; it cannot make a case pass or fail.
    fn flood(&mut self, bytes: &[u8], held: std::sync::mpsc::Sender<()>) -> CaseResult {
        let fail = |e: std::io::Error| format!("writing to the relay: {e}");
        self.stream.set_nonblocking(true).map_err(fail)?;
        let mut off = 0;
        while off < bytes.len() {
            if Instant::now() >= self.deadline {
                return Err(format!(
                    "the relay took {off} of {} bytes before the deadline",
                    bytes.len()
                ));
            }
            match self.stream.write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let (_, writable) = crate::client::wait_fd(
                        &self.stream,
                        false,
                        true,
                        Some(Duration::from_millis(300)),
                    )
                    .map_err(fail)?;
                    if !writable {
                        let _ = held.send(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        let _ = held.send(());
        self.stream.set_nonblocking(false).map_err(fail)
    }

    fn hello(&mut self, name: &[u8]) -> Result<Got, String> {
        let mut b = Vec::new();
        protocol::put_hello(&mut b, name);
        self.write(&b)?;
        self.next()
    }

    fn send(&mut self, dst: &[u8], payload: &[u8]) -> CaseResult {
        let mut b = Vec::new();
        protocol::put_send(&mut b, &self.named(dst), payload);
        self.write(&b)
    }

    /// `name` as this case's relay knows it (with the case's prefix).
    fn named(&self, name: &[u8]) -> Vec<u8> {
        [&self.prefix[..], name].concat()
    }

    /// A name that came back, as the case wrote it. One without the case's prefix is no name
    /// the case used: it comes back marked (`!a`), so it matches nothing the case expects.
    fn unnamed(&self, name: Vec<u8>) -> Vec<u8> {
        if self.prefix.is_empty() {
            return name;
        }
        match name.strip_prefix(&self.prefix[..]) {
            Some(n) => n.to_vec(),
            None => [&b"!"[..], &name].concat(),
        }
    }

    /// The next frame or end of stream; an error when the deadline passes first.
    fn next(&mut self) -> Result<Got, String> {
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => {
                    let got = f
                        .relay()
                        .map(Got::from)
                        .map_err(|v| format!("the relay sent a bad frame: {v}"))?;
                    return Ok(match got {
                        Got::Welcome(n) => Got::Welcome(self.unnamed(n)),
                        Got::Deliver(src, p) => Got::Deliver(self.unnamed(src), p),
                        Got::Bounce(dst, p) => Got::Bounce(self.unnamed(dst), p),
                        other => other,
                    });
                }
                Ok(None) => {}
                Err(v) => return Err(format!("the relay sent a bad frame: {v}")),
            }
            if Instant::now() >= self.deadline {
                return Err("nothing came before the case's deadline (the relay hangs?)".into());
            }
            match self.dec.read_from(&mut self.stream) {
                Ok(0) => return Ok(Got::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(Got::Eof),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!(
                        "nothing came within {CASE_DEADLINE:?} (the relay hangs?)"
                    ))
                }
                Err(e) => return Err(format!("reading from the relay: {e}")),
            }
        }
    }

    fn expect(&mut self, want: Got) -> CaseResult {
        let got = self.next()?;
        if got == want {
            Ok(())
        } else {
            Err(format!("expected {want}, got {got}"))
        }
    }

    fn expect_error(&mut self, code: ErrorCode) -> CaseResult {
        match self.next()? {
            Got::Error(c, _) if c == code as u16 => match self.next()? {
                Got::Eof => Ok(()),
                other => Err(format!(
                    "expected the relay to close after ERROR {code}, got {other}"
                )),
            },
            other => Err(format!("expected ERROR {code}, got {other}")),
        }
    }
}

/// What a case can use: the relay's address and the case's deadline. Against a relay that
/// runs on (`--relay-addr`), each case's names carry a prefix of their own (`p4242k3-alice`:
/// this process, case 3), so a name the case before still held, or has only just given up, is
/// not in the way.
pub struct Ctx {
    addr: Addr,
    deadline: Instant,
    prefix: String,
}

impl Ctx {
    fn peer(&self) -> Result<Peer, String> {
        Peer::connect(&self.addr, self.deadline, &self.prefix)
    }

    /// `name` with this case's prefix, for frames a case writes by hand.
    fn name(&self, name: &[u8]) -> Vec<u8> {
        [self.prefix.as_bytes(), name].concat()
    }

    fn registered(&self, name: &str) -> Result<Peer, String> {
        let mut p = self.peer()?;
        match p.hello(&self.name(name.as_bytes()))? {
            Got::Welcome(n) if n == name.as_bytes() => Ok(p),
            other => Err(format!("HELLO {name:?}: expected WELCOME, got {other}")),
        }
    }

    /// Registers `name` once a previous holder's close has been seen (NAME_TAKEN until then).
    fn reregistered(&self, name: &str) -> Result<Peer, String> {
        while Instant::now() < self.deadline {
            let mut p = self.peer()?;
            match p.hello(&self.name(name.as_bytes()))? {
                Got::Welcome(_) => return Ok(p),
                Got::Error(c, _) if c == ErrorCode::NameTaken as u16 => continue,
                other => {
                    return Err(format!(
                        "HELLO {name:?} again: expected WELCOME, got {other}"
                    ))
                }
            }
        }
        Err(format!("{name:?} was not freed before the deadline"))
    }
}

/// One case: a name, the clause of docs/protocol.md it checks, and the check.
pub struct Case {
    /// Short name.
    pub name: &'static str,
    /// The clause it checks.
    pub clause: &'static str,
    run: fn(&Ctx) -> CaseResult,
}

fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn send_bytes(dst: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    protocol::put_send(&mut b, dst, payload);
    b
}

/// Every case, in the order they run.
pub fn cases() -> Vec<Case> {
    vec![
        Case { name: "registration", clause: "HELLO name -> WELCOME name", run: |c| {
            c.registered("alice").map(|_| ())
        }},
        Case { name: "routing", clause: "SEND dst payload -> DELIVER src payload to dst, src = the sender's name", run: |c| {
            let (mut a, mut b) = (c.registered("a")?, c.registered("b")?);
            a.send(b"b", b"1")?;
            b.expect(Got::Deliver(b"a".to_vec(), b"1".to_vec()))?;
            b.send(b"a", b"")?;
            a.expect(Got::Deliver(b"b".to_vec(), vec![]))
        }},
        Case { name: "self-send", clause: "sending to yourself is allowed", run: |c| {
            let mut a = c.registered("me")?;
            a.send(b"me", b"echo")?;
            a.expect(Got::Deliver(b"me".to_vec(), b"echo".to_vec()))
        }},
        Case { name: "bounce", clause: "a SEND to an unregistered dst comes back as BOUNCE", run: |c| {
            let mut a = c.registered("a")?;
            a.send(b"nobody", b"lost?")?;
            a.expect(Got::Bounce(b"nobody".to_vec(), b"lost?".to_vec()))
        }},
        Case { name: "bad names", clause: "names are 1..=32 of [A-Za-z0-9_.-], else BAD_NAME", run: |c| {
            for name in [&b""[..], &[b'x'; 33], b"a b", "é".as_bytes()] {
                c.peer()?.hello(name).and_then(|got| match got {
                    Got::Error(code, _) if code == ErrorCode::BadName as u16 => Ok(()),
                    other => Err(format!("HELLO {:?}: expected ERROR BAD_NAME, got {other}", String::from_utf8_lossy(name))),
                })?;
            }
            Ok(())
        }},
        Case { name: "name taken", clause: "HELLO with a live name -> NAME_TAKEN; the holder keeps it", run: |c| {
            let mut holder = c.registered("alice")?;
            let mut thief = c.peer()?;
            let mut b = Vec::new();
            protocol::put_hello(&mut b, &c.name(b"alice"));
            thief.write(&b)?;
            thief.expect_error(ErrorCode::NameTaken)?;
            let mut bob = c.registered("bob")?;
            bob.send(b"alice", b"still yours")?;
            holder.expect(Got::Deliver(b"bob".to_vec(), b"still yours".to_vec()))
        }},
        Case { name: "not registered", clause: "anything before HELLO, or a second HELLO -> NOT_REGISTERED", run: |c| {
            let mut p = c.peer()?;
            p.write(&send_bytes(&c.name(b"x"), b"y"))?;
            p.expect_error(ErrorCode::NotRegistered)?;
            let mut q = c.registered("twice")?;
            let mut b = Vec::new();
            protocol::put_hello(&mut b, &c.name(b"again"));
            q.write(&b)?;
            q.expect_error(ErrorCode::NotRegistered)
        }},
        Case { name: "oversized frame", clause: "a length prefix above max_frame -> FRAME_TOO_LARGE, from the prefix alone", run: |c| {
            let mut p = c.registered("big")?;
            p.write(&u32::MAX.to_be_bytes())?;
            p.expect_error(ErrorCode::FrameTooLarge)
        }},
        Case { name: "malformed frames", clause: "len 0, or dst_len past the body -> BAD_FRAME", run: |c| {
            let mut p = c.registered("m1")?;
            p.write(&[0, 0, 0, 0])?;
            p.expect_error(ErrorCode::BadFrame)?;
            let mut q = c.registered("m2")?;
            q.write(&raw_frame(Kind::Send as u8, b"\x09abc"))?;
            q.expect_error(ErrorCode::BadFrame)
        }},
        Case { name: "unknown types", clause: "an unknown type, or a relay->client type from a client -> BAD_FRAME", run: |c| {
            let mut p = c.registered("u1")?;
            p.write(&raw_frame(9, b""))?;
            p.expect_error(ErrorCode::BadFrame)?;
            let mut q = c.registered("u2")?;
            q.write(&raw_frame(Kind::Deliver as u8, b"\x01ax"))?;
            q.expect_error(ErrorCode::BadFrame)
        }},
        Case { name: "FIFO over a burst", clause: "per pair, DELIVERs arrive in the order the SENDs were written", run: |c| {
            let mut rx = c.registered("rx")?;
            let mut tx = c.registered("tx")?;
            let mut burst = Vec::new();
            for i in 0u32..10_000 {
                burst.extend(send_bytes(&c.name(b"rx"), &i.to_be_bytes()));
            }
            let writer = std::thread::spawn(move || tx.write(&burst));
            for i in 0u32..10_000 {
                rx.expect(Got::Deliver(b"tx".to_vec(), i.to_be_bytes().to_vec()))
                    .map_err(|e| format!("message {i} of 10,000: {e}"))?;
            }
            writer.join().map_err(|_| "writer panicked".to_string())?
        }},
        Case { name: "byte at a time", clause: "a frame may arrive split over many reads", run: |c| {
            let mut dst = c.registered("dst")?;
            let mut drip = c.peer()?;
            let mut bytes = Vec::new();
            protocol::put_hello(&mut bytes, &c.name(b"drip"));
            bytes.extend(send_bytes(&c.name(b"dst"), b"slow but whole"));
            for b in &bytes {
                drip.write(std::slice::from_ref(b))?;
            }
            drip.expect(Got::Welcome(b"drip".to_vec()))?;
            dst.expect(Got::Deliver(b"drip".to_vec(), b"slow but whole".to_vec()))
        }},
        Case { name: "others flow past a half-sent frame", clause: "the relay never blocks on one client", run: |c| {
            let mut slow = c.registered("slow")?;
            let frame = send_bytes(&c.name(b"slow"), &[7u8; 100]);
            slow.write(&frame[..10])?;
            let (mut a, mut b) = (c.registered("a")?, c.registered("b")?);
            for i in 0u32..100 {
                a.send(b"b", &i.to_be_bytes())?;
                b.expect(Got::Deliver(b"a".to_vec(), i.to_be_bytes().to_vec()))
                    .map_err(|e| format!("round trip {i} while a frame was half sent: {e}"))?;
            }
            Ok(())
        }},
        Case { name: "truncated frame then close", clause: "a partial frame is dropped with its connection; the name is freed", run: |c| {
            let mut other = c.registered("other")?;
            {
                let mut t = c.registered("trunc")?;
                t.write(&send_bytes(&c.name(b"other"), &[1u8; 100])[..20])?;
            }
            c.reregistered("trunc")?;
            other.send(b"other", b"still here")?;
            other.expect(Got::Deliver(b"other".to_vec(), b"still here".to_vec()))
        }},
        Case { name: "name freed on close", clause: "a name is freed when its connection closes and can be registered again", run: |c| {
            let mut s = c.registered("sender")?;
            drop(c.registered("phoenix")?);
            let mut again = c.reregistered("phoenix")?;
            s.send(b"phoenix", b"to the second")?;
            again.expect(Got::Deliver(b"sender".to_vec(), b"to the second".to_vec()))
        }},
        Case { name: "a client that never reads", clause: "backpressure: a full receiver holds its senders back, loses nothing, and other pairs keep flowing", run: |c| {
            let mut sink = c.registered("sink")?;
            let mut flood = c.registered("flood")?;
            let (mut a, mut b) = (c.registered("a")?, c.registered("b")?);
            const FRAMES: u32 = 8192;
            let mut all = Vec::new();
            for i in 0..FRAMES {
                let mut p = vec![(i % 251) as u8; 1024];
                p[..4].copy_from_slice(&i.to_be_bytes());
                all.extend(send_bytes(&c.name(b"sink"), &p));
            }
            // 8 MiB at a receiver that does not read: the writer will be held back. The round
            // trips start once it is (a relay that blocks on the sink has stopped by then).
            let (held_tx, held) = std::sync::mpsc::channel();
            let writer = std::thread::spawn(move || flood.flood(&all, held_tx));
            let _ = held.recv();
            for i in 0u32..100 {
                a.send(b"b", &i.to_be_bytes())?;
                b.expect(Got::Deliver(b"a".to_vec(), i.to_be_bytes().to_vec()))
                    .map_err(|e| format!("round trip {i} while a receiver did not read: {e}"))?;
            }
            for i in 0..FRAMES {
                match sink.next()? {
                    Got::Deliver(src, p) if src == b"flood" && p.len() == 1024 && p[..4] == i.to_be_bytes() => {}
                    other => return Err(format!("message {i} at the slow receiver: expected DELIVER from \"flood\" with seq {i}, got {other}")),
                }
            }
            writer.join().map_err(|_| "writer panicked".to_string())?
        }},
        Case { name: "a stopped client", clause: "a client stopped mid-frame and mid-stream stalls nobody else, and gets everything when it resumes", run: |c| {
            // What SIGSTOP leaves: half a frame written, and a stream it has stopped reading.
            let mut stopped = c.registered("stopped")?;
            let mut flood = c.registered("flood")?;
            let (mut a, mut b) = (c.registered("a")?, c.registered("b")?);
            flood.send(b"stopped", b"before")?;
            stopped.expect(Got::Deliver(b"flood".to_vec(), b"before".to_vec()))?;
            let own = send_bytes(&c.name(b"a"), b"my frame, finished later");
            stopped.write(&own[..7])?;
            // Big frames: a relay that blocks in write() to the stopped client blocks after a
            // few of them, long before the round trips below are done.
            const FRAMES: u32 = 256;
            let mut all = Vec::new();
            for i in 0..FRAMES {
                let mut p = vec![(i % 251) as u8; 32 * 1024];
                p[..4].copy_from_slice(&i.to_be_bytes());
                all.extend(send_bytes(&c.name(b"stopped"), &p));
            }
            let writer = std::thread::spawn(move || flood.write(&all));
            for i in 0u32..100 {
                b.send(b"a", &i.to_be_bytes())?;
                a.expect(Got::Deliver(b"b".to_vec(), i.to_be_bytes().to_vec()))
                    .map_err(|e| format!("round trip {i} while a client was stopped: {e}"))?;
            }
            // It resumes: finishes its frame, and reads everything, in order.
            stopped.write(&own[7..])?;
            a.expect(Got::Deliver(b"stopped".to_vec(), b"my frame, finished later".to_vec()))?;
            for i in 0..FRAMES {
                match stopped.next()? {
                    Got::Deliver(src, p) if src == b"flood" && p.len() == 32 * 1024 && p[..4] == i.to_be_bytes() => {}
                    other => return Err(format!("message {i} after the resume: expected DELIVER from \"flood\" with seq {i}, got {other}")),
                }
            }
            writer.join().map_err(|_| "writer panicked".to_string())?
        }},
        Case { name: "connections past capacity", clause: "a connection beyond capacity gets RELAY_FULL and is closed; the relay serves the rest", run: |c| {
            let _ = crate::sys::raise_nofile_limit();
            let mut a = c.registered("a")?;
            // More than select() can watch, and than the built-in relay's default capacity.
            let mut extra = Vec::new();
            for _ in 0..1100 {
                extra.push(c.peer()?);
            }
            // The last ones are either kept (nothing comes yet) or turned away properly.
            for p in extra.iter_mut().rev().take(20) {
                let _ = p.stream.set_read_timeout(Some(Duration::from_millis(20)));
                match p.next() {
                    Err(_) => {} // kept: silent until it says HELLO
                    Ok(Got::Error(code, _)) if code == ErrorCode::RelayFull as u16 => {}
                    Ok(other) => return Err(format!("a connection past capacity: expected RELAY_FULL or silence, got {other}")),
                }
            }
            drop(extra);
            a.send(b"a", b"still serving")?;
            a.expect(Got::Deliver(b"a".to_vec(), b"still serving".to_vec()))
        }},
    ]
}

/// One case's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseReport {
    /// The case.
    pub case: &'static str,
    /// The clause it checks.
    pub clause: &'static str,
    /// `pass` or `fail`.
    pub verdict: &'static str,
    /// What was expected and what came, when it failed.
    pub detail: Option<String>,
    /// Milliseconds it took.
    pub ms: u64,
}

/// How to start the relay under test for one case.
pub struct RelayUnderTest {
    /// `sh -c` command with `{addr}`.
    pub command: String,
    /// unix or tcp.
    pub transport: String,
    /// Where its output goes.
    pub log_dir: PathBuf,
    /// A relay already running (`--relay-addr`): no command is started, every case meets the
    /// same relay, and each case's names carry a prefix of their own.
    pub at: Option<Addr>,
}

/// A relay started for one case; killed (with its process group) and reaped on drop.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        relay_harness::janitor::reaped(self.child.id() as i32);
    }
}

fn start(r: &RelayUnderTest, n: usize) -> Result<(Option<Running>, Addr), String> {
    use std::os::unix::process::CommandExt;
    if let Some(addr) = &r.at {
        // Bounded: a host that drops the connection attempt would otherwise hold each case
        // for the kernel's SYN retries (two minutes).
        let probe = match addr {
            Addr::Tcp(sa) => std::net::TcpStream::connect_timeout(sa, CASE_DEADLINE).map(|_| ()),
            Addr::Unix(p) => std::os::unix::net::UnixStream::connect(p).map(|_| ()),
        };
        return probe
            .map(|()| (None, addr.clone()))
            .map_err(|e| format!("nothing accepts connections at --relay-addr {addr}: {e}"));
    }
    let addr = match r.transport.as_str() {
        "tcp" => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            Addr::Tcp(l.local_addr().map_err(|e| e.to_string())?)
        }
        _ => Addr::Unix(r.log_dir.join(format!("case{n}.sock"))),
    };
    let text = match &addr {
        Addr::Unix(p) => p.display().to_string(),
        Addr::Tcp(sa) => sa.to_string(),
    };
    let log =
        std::fs::File::create(r.log_dir.join(format!("case{n}.log"))).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r.command.replace("{addr}", &text))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0);
    // SAFETY: the hook runs in the forked child after setpgid and before exec, and does one
    // write(2) (async-signal-safe). It makes the janitor learn of the group before the
    // command runs, not after spawn returns (a SIGKILL in between orphaned a relay).
    unsafe {
        cmd.pre_exec(|| {
            relay_harness::janitor::announce_self();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the relay: {e}"))?;
    // Its group is killed if we are (by the janitor, when `relay-sim conform` started one).
    relay_harness::janitor::group(child.id() as i32);
    let running = Running { child };
    // Wait (bounded) until it accepts connections.
    let until = Instant::now() + CASE_DEADLINE;
    loop {
        match Stream::connect(&addr) {
            Ok(_) => return Ok((Some(running), addr)),
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("the relay never listened on {addr}: {e}")),
        }
    }
}

/// Runs every case against a fresh relay each.
pub fn run_all(r: &RelayUnderTest) -> Vec<CaseReport> {
    let mut out = Vec::new();
    for (n, case) in cases().into_iter().enumerate() {
        let t = Instant::now();
        let result = start(r, n).and_then(|(running, addr)| {
            let ctx = Ctx {
                addr,
                deadline: Instant::now() + CASE_DEADLINE,
                // (With this process's id: two suites at one relay do not collide either.)
                prefix: if r.at.is_some() {
                    format!("p{}k{n}-", std::process::id())
                } else {
                    String::new()
                },
            };
            // In a thread of its own: a call the deadline cannot interrupt (a connect to a
            // relay that never accepts, a write it never reads) fails the case when the relay
            // is killed, instead of hanging the suite.
            let (tx, rx) = std::sync::mpsc::channel();
            let run = case.run;
            let worker = std::thread::spawn(move || {
                let _ = tx.send(run(&ctx));
            });
            let res = rx
                .recv_timeout(CASE_DEADLINE + Duration::from_secs(2))
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the case did not finish within {CASE_DEADLINE:?} (the relay hangs, or never accepts?)"
                    ))
                });
            drop(running);
            let _ = worker.join();
            res
        });
        out.push(CaseReport {
            case: case.name,
            clause: case.clause,
            verdict: if result.is_ok() { "pass" } else { "fail" },
            detail: result.err(),
            ms: t.elapsed().as_millis() as u64,
        });
    }
    out
}

/// Tail of a case's relay log, for a failing case.
pub fn log_tail(dir: &Path, n: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(dir.join(format!("case{n}.log"))) {
        let _ = f.read_to_string(&mut s);
    }
    s.lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n")
}
