//! The relay as a real process, on Unix sockets and on TCP, under every backend.

#[macro_use]
mod util;

use std::io::Write;
use std::sync::mpsc;

use relay_sim::protocol::{ErrorCode, Kind};
use relay_sim::sys::Addr;
use util::*;

/// The test process's fd table, shared by its threads: `beyond_fd_setsize` holds a thousand fds
/// of it, which would put an in-process select relay's new connections past FD_SETSIZE (refused).
/// Tests that drive a relay in-process hold it shared; `beyond_fd_setsize` holds it alone.
static FD_TABLE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Holds [`FD_TABLE`] for a test that drives a relay in-process.
fn few_fds() -> std::sync::RwLockReadGuard<'static, ()> {
    FD_TABLE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

on_every_relay!(
    routing,
    self_send,
    bounce,
    name_taken,
    bad_names,
    not_registered,
    oversized_length_prefix,
    max_frame_edge,
    bad_frames,
    byte_at_a_time,
    ten_thousand_frames_in_one_write,
    truncated_frame_then_close,
    name_freed_and_reregistered,
    half_closed_client_gets_what_was_queued_for_it,
    leaving_loses_nothing_the_client_wrote,
    never_reading_client,
    beyond_fd_setsize,
    beyond_max_clients,
);

fn routing(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut a = registered(&r, "ClientA");
    let mut bb = registered(&r, "ClientB");
    a.send(b"ClientB", b"1");
    assert_eq!(bb.next(), Got::Deliver(b"ClientA".to_vec(), b"1".to_vec()));
    bb.send(b"ClientA", b"2");
    assert_eq!(a.next(), Got::Deliver(b"ClientB".to_vec(), b"2".to_vec()));
    // An empty payload is a payload.
    a.send(b"ClientB", b"");
    assert_eq!(bb.next(), Got::Deliver(b"ClientA".to_vec(), vec![]));

    // The client library, both ways, through the same relay.
    let mut c = r.client("lib.c");
    let mut d = r.client("lib.d");
    c.send("lib.d", b"from c").unwrap();
    let m = d.recv(Some(WAIT)).unwrap();
    assert_eq!(
        m,
        relay_sim::client::Message::Deliver {
            src: "lib.c".into(),
            payload: b"from c".to_vec()
        }
    );
}

fn self_send(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut a = registered(&r, "me");
    a.send(b"me", b"echo");
    assert_eq!(a.next(), Got::Deliver(b"me".to_vec(), b"echo".to_vec()));
}

fn bounce(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut a = registered(&r, "a");
    a.send(b"nobody", b"lost?");
    assert_eq!(a.next(), Got::Bounce(b"nobody".to_vec(), b"lost?".to_vec()));
    // A name that could never be registered bounces too.
    a.send(b"", b"x");
    assert_eq!(a.next(), Got::Bounce(vec![], b"x".to_vec()));
    a.send(b"bad name!", b"y");
    assert_eq!(a.next(), Got::Bounce(b"bad name!".to_vec(), b"y".to_vec()));
}

fn name_taken(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut holder = registered(&r, "alice");
    let mut thief = r.raw();
    match thief.hello(b"alice") {
        Got::Error(code, text) => {
            assert_eq!(code, ErrorCode::NameTaken as u16, "{text}");
            assert!(text.contains("alice"), "the text names the name: {text}");
        }
        other => panic!("expected NAME_TAKEN, got {other:?}"),
    }
    assert_eq!(thief.next(), Got::Eof);
    // The holder keeps its name.
    let mut bob = registered(&r, "bob");
    bob.send(b"alice", b"still yours");
    assert_eq!(
        holder.next(),
        Got::Deliver(b"bob".to_vec(), b"still yours".to_vec())
    );
}

fn bad_names(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let long = vec![b'x'; 33];
    for name in [&b""[..], &long, b"a b", "é".as_bytes(), b"a/b", b"a\0b"] {
        let mut c = r.raw();
        let mut hello = Vec::new();
        relay_sim::protocol::put_hello(&mut hello, name);
        c.write(&hello);
        c.expect_error(ErrorCode::BadName);
    }
    // The longest legal name is fine.
    registered(&r, &"y".repeat(32));
}

fn not_registered(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    // SEND before HELLO.
    let mut c = r.raw();
    c.send(b"anyone", b"hi");
    c.expect_error(ErrorCode::NotRegistered);
    // A second HELLO; the first name is freed with the connection.
    let mut c = registered(&r, "twice");
    let mut hello = Vec::new();
    relay_sim::protocol::put_hello(&mut hello, b"again");
    c.write(&hello);
    c.expect_error(ErrorCode::NotRegistered);
    registered(&r, "twice");
}

fn oversized_length_prefix(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    // Only the 4-byte prefix: the relay must judge from it alone, allocating nothing for it.
    let mut c = r.raw();
    c.write(&u32::MAX.to_be_bytes());
    let text = c.expect_error(ErrorCode::FrameTooLarge);
    assert!(text.contains("4294967295"), "{text}");
    let mut c = registered(&r, "big");
    c.write(&((1u32 << 20) + 1).to_be_bytes());
    c.expect_error(ErrorCode::FrameTooLarge);
    assert!(
        r.peak_rss_kib() < 64 * 1024,
        "relay peak RSS {} KiB: it allocated for a claimed length",
        r.peak_rss_kib()
    );
}

fn max_frame_edge(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &["--max-frame", "1000"]);
    let mut a = registered(&r, "a");
    let mut z = registered(&r, "z");
    // len = 1 (type) + 1 (dst_len) + 1 (dst) + payload: exactly 1000 passes.
    let payload = vec![7u8; 1000 - 3];
    a.send(b"z", &payload);
    assert_eq!(z.next(), Got::Deliver(b"a".to_vec(), payload));
    a.send(b"z", &[7u8; 1000 - 2]);
    a.expect_error(ErrorCode::FrameTooLarge);
}

fn bad_frames(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("len 0", vec![0, 0, 0, 0]),
        ("type 0", frame(0, b"")),
        ("type 7", frame(7, b"abc")),
        ("type 255", frame(255, b"")),
        ("WELCOME from a client", frame(Kind::Welcome as u8, b"me")),
        (
            "DELIVER from a client",
            frame(Kind::Deliver as u8, b"\x01ax"),
        ),
        ("BOUNCE from a client", frame(Kind::Bounce as u8, b"\x01ax")),
        (
            "ERROR from a client",
            frame(Kind::Error as u8, b"\x00\x01x"),
        ),
        ("SEND, empty body", frame(SEND, b"")),
        ("SEND, dst_len past the body", frame(SEND, b"\x09abc")),
    ];
    for (what, bytes) in cases {
        let mut c = registered(&r, "bad");
        c.write(&bytes);
        match c.next() {
            Got::Error(code, _) => assert_eq!(code, ErrorCode::BadFrame as u16, "{what}"),
            other => panic!("{what}: expected BAD_FRAME, got {other:?}"),
        }
        assert_eq!(c.next(), Got::Eof, "{what}: closed after ERROR");
    }
    // Unregistered connections get BAD_FRAME for malformed frames too.
    let mut c = r.raw();
    c.write(&frame(9, b""));
    c.expect_error(ErrorCode::BadFrame);
}

fn byte_at_a_time(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut dst = registered(&r, "dst");
    let mut pinger = registered(&r, "pinger");
    let mut drip = r.raw();
    let mut bytes = Vec::new();
    relay_sim::protocol::put_hello(&mut bytes, b"drip");
    bytes.extend(send_bytes(b"dst", b"slow but whole"));
    bytes.extend(send_bytes(b"dst", b"and in order"));
    for (i, byte) in bytes.iter().enumerate() {
        drip.write(std::slice::from_ref(byte));
        // A round trip on another connection: the relay keeps serving others meanwhile,
        // and has had a chance to read the partial frame.
        pinger.send(b"pinger", &i.to_be_bytes());
        assert_eq!(
            pinger.next(),
            Got::Deliver(b"pinger".to_vec(), i.to_be_bytes().to_vec())
        );
    }
    assert_eq!(drip.next(), Got::Welcome(b"drip".to_vec()));
    assert_eq!(
        dst.next(),
        Got::Deliver(b"drip".to_vec(), b"slow but whole".to_vec())
    );
    assert_eq!(
        dst.next(),
        Got::Deliver(b"drip".to_vec(), b"and in order".to_vec())
    );
}

fn ten_thousand_frames_in_one_write(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut rx = registered(&r, "rx");
    let mut tx = registered(&r, "tx");
    let mut bytes = Vec::new();
    for i in 0u32..10_000 {
        bytes.extend(send_bytes(b"rx", &i.to_be_bytes()));
    }
    let writer = std::thread::spawn(move || {
        tx.write(&bytes);
        tx
    });
    for i in 0u32..10_000 {
        assert_eq!(
            rx.next(),
            Got::Deliver(b"tx".to_vec(), i.to_be_bytes().to_vec()),
            "frame {i}"
        );
    }
    writer.join().unwrap();
}

fn truncated_frame_then_close(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut other = registered(&r, "other");
    {
        let mut c = registered(&r, "trunc");
        let whole = send_bytes(b"other", &[1u8; 100]);
        c.write(&whole[..20]);
    } // closed mid-frame
      // Nothing of the partial frame arrives; the relay carries on; the name comes free.
    reregister(&r, "trunc");
    other.send(b"other", b"still here");
    assert_eq!(
        other.next(),
        Got::Deliver(b"other".to_vec(), b"still here".to_vec())
    );
}

/// Registers `name` once the relay has noticed its previous holder closed: each attempt is
/// a full round trip (NAME_TAKEN while the old connection is still being torn down).
#[track_caller]
fn reregister(r: &RelayProc, name: &str) -> Raw {
    register_retrying(r, name, ErrorCode::NameTaken)
}

/// Registers `name`, retrying (each a round trip) while the relay answers `transient`.
#[track_caller]
fn register_retrying(r: &RelayProc, name: &str, transient: ErrorCode) -> Raw {
    for _ in 0..10_000 {
        let mut c = r.raw();
        let mut hello = Vec::new();
        relay_sim::protocol::put_hello(&mut hello, name.as_bytes());
        // A relay that turns us away at once may have closed before our HELLO is written.
        if let Err(e) = c.stream.write_all(&hello) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "re-registering {name}"
            );
            continue;
        }
        match c.next() {
            Got::Welcome(n) if n == name.as_bytes() => return c,
            Got::Error(code, _) if code == transient as u16 => continue,
            other => panic!("re-registering {name}: {other:?}"),
        }
    }
    panic!("{name} was never freed");
}

/// The leaving rule, relay side: a client that shuts down its sending side (as `Client::leave`
/// does) still gets everything the relay had queued for it, then the relay closes; what senders
/// had not yet had routed to it bounces. Nothing is dropped. (The relay used to close at end of
/// stream and drop what it had queued.)
fn half_closed_client_gets_what_was_queued_for_it(t: Transport, b: &str) {
    use relay_sim::protocol::RelayFrame;
    use std::time::{Duration, Instant};
    const K: u32 = 32_768;
    const SIZE: usize = 1024; // 32 MiB: more than the sockets (TCP's grow to a few MiB) and the relay hold
    let r = RelayProc::start(t, b, &["--max-buffer", "64KiB"]);
    let mut a = registered(&r, "a");
    let c = r.client("c");
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (d_tx, d_rx) = mpsc::channel::<u32>();
    // c sends K frames to a, which does not read, and tells when the relay holds it back; then
    // it keeps writing and reading until each frame is delivered (a says how many) or bounced.
    let sender = std::thread::spawn(move || {
        let mut c = c;
        for i in 0..K {
            let mut p = vec![(i % 251) as u8; SIZE];
            p[..4].copy_from_slice(&i.to_be_bytes());
            c.queue("a", &p);
        }
        let (mut bounced, mut told, mut delivered) = (Vec::new(), false, None);
        let until = Instant::now() + WAIT * 3;
        loop {
            assert!(Instant::now() < until, "c did not finish");
            let before = c.pending();
            let open = c
                .pump(Some(Duration::from_millis(300)), |f| {
                    if let RelayFrame::Bounce { payload, .. } = f {
                        bounced.push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                    }
                })
                .expect("c pumps");
            assert!(open, "the relay closed c");
            if !told && before > 0 && c.pending() == before {
                told = true;
                held_tx.send(()).unwrap();
            }
            delivered = delivered.or_else(|| d_rx.try_recv().ok());
            if let Some(d) = delivered {
                if c.pending() == 0 && d as usize + bounced.len() == K as usize {
                    return bounced;
                }
            }
        }
    });
    held_rx.recv_timeout(WAIT * 3).expect("c is held back");
    a.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut d = 0u32;
    loop {
        match a.next() {
            Got::Deliver(src, p) => {
                assert_eq!(src, b"c");
                assert_eq!(&p[..4], &d.to_be_bytes(), "in order");
                d += 1;
            }
            Got::Eof => break,
            other => panic!("after {d} deliveries: {other:?}"),
        }
    }
    d_tx.send(d).unwrap();
    let bounced = sender.join().unwrap();
    assert!(
        d > 0,
        "what was queued for a when it shut down still arrives"
    );
    assert_eq!(
        bounced,
        (d..K).collect::<Vec<_>>(),
        "the rest bounces, in order"
    );
}

/// The leaving rule, client side: `Client::leave` with unread input and megabytes still in the
/// kernel's send queue loses nothing (closing instead would send a TCP reset, and the kernel
/// would discard what it had not sent), reads what still comes, and ends at the relay's close.
fn leaving_loses_nothing_the_client_wrote(t: Transport, b: &str) {
    use relay_sim::protocol::RelayFrame;
    const K: u32 = 16_384;
    const SIZE: usize = 1024;
    let r = RelayProc::start(t, b, &[]);
    let mut sink = registered(&r, "sink");
    let mut c = registered(&r, "c");
    let mut a = r.client("a");
    for i in 0..10u8 {
        c.send(b"a", &[i]); // a never reads these before it leaves
    }
    let leaver = std::thread::spawn(move || {
        for i in 0..K {
            let mut p = vec![(i % 251) as u8; SIZE];
            p[..4].copy_from_slice(&i.to_be_bytes());
            a.queue("sink", &p);
        }
        let mut got = Vec::new();
        let left = a.leave(Some(WAIT * 3), |f| {
            if let RelayFrame::Deliver { payload, .. } = f {
                got.push(payload[0]);
            }
        });
        (left.map_err(|e| e.to_string()), got, a.is_closed())
    });
    for i in 0..K {
        match sink.next() {
            Got::Deliver(src, p) => {
                assert_eq!(src, b"a");
                assert_eq!(&p[..4], &i.to_be_bytes(), "frame {i} in order");
            }
            other => panic!("frame {i}: {other:?}"),
        }
    }
    let (left, got, closed) = leaver.join().unwrap();
    assert_eq!(left, Ok(()));
    assert!(closed, "leave ends when the relay closes");
    assert_eq!(
        got,
        (0..10).collect::<Vec<u8>>(),
        "what arrived while leaving"
    );
}

fn name_freed_and_reregistered(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut s = registered(&r, "sender");
    let mut old = registered(&r, "phoenix");
    s.send(b"phoenix", b"to the first");
    assert_eq!(
        old.next(),
        Got::Deliver(b"sender".to_vec(), b"to the first".to_vec())
    );
    drop(old);
    let mut new = reregister(&r, "phoenix");
    s.send(b"phoenix", b"to the second");
    assert_eq!(
        new.next(),
        Got::Deliver(b"sender".to_vec(), b"to the second".to_vec())
    );
}

fn never_reading_client(t: Transport, b: &str) {
    const FRAMES: u32 = 65_536;
    const SIZE: usize = 1024; // 64 MiB in all, 256 times the relay's buffer bound
                              // A short frame timeout: holding a sender back must not count against it.
    let r = RelayProc::start(
        t,
        b,
        &["--max-buffer", "256KiB", "--frame-timeout", "100ms"],
    );
    let mut sink = registered(&r, "sink");
    let flooder = registered(&r, "flooder");
    let (c, d) = (r.client("c"), r.client("d"));

    // The flooder writes 64 MiB to a sink that does not read yet. It reports when it is held
    // back (its socket stays unwritable) or when it has written everything.
    let (tx, rx) = mpsc::channel::<bool>();
    let writer = std::thread::spawn(move || {
        let mut f = flooder;
        let mut all = Vec::with_capacity(FRAMES as usize * (SIZE + 16));
        for i in 0..FRAMES {
            let mut p = vec![(i % 251) as u8; SIZE];
            p[..4].copy_from_slice(&i.to_be_bytes());
            all.extend(send_bytes(b"sink", &p));
        }
        flood(&mut f, &all, tx);
        f
    });
    let first = rx.recv_timeout(WAIT * 3).expect("flooder reports");

    // Other pairs keep flowing while the sink's buffer is full.
    let (mut c, mut d) = (c, d);
    for i in 0u32..1000 {
        c.send("d", &i.to_be_bytes()).unwrap();
        let m = d.recv(Some(WAIT)).unwrap();
        assert_eq!(
            m,
            relay_sim::client::Message::Deliver {
                src: "c".into(),
                payload: i.to_be_bytes().to_vec()
            }
        );
    }
    let held_rss = proc_status_kib(r.pid(), "VmRSS:");

    // Now drain: every frame, in order, intact.
    for i in 0..FRAMES {
        match sink.next() {
            Got::Deliver(src, p) => {
                assert_eq!(src, b"flooder");
                assert_eq!(p.len(), SIZE);
                assert_eq!(&p[..4], &i.to_be_bytes(), "frame {i} out of order");
                assert!(
                    p[4..].iter().all(|&x| x == (i % 251) as u8),
                    "frame {i} corrupted"
                );
            }
            other => panic!("frame {i}: {other:?}"),
        }
    }
    writer.join().unwrap();
    let peak = r.peak_rss_kib();
    assert!(
        first,
        "the flooder was never held back (relay RSS peak {peak} KiB)"
    );
    assert!(
        peak < 24 * 1024,
        "relay peak RSS {peak} KiB (while held back {held_rss} KiB) for a 256 KiB bound"
    );
}

fn beyond_fd_setsize(t: Transport, b: &str) {
    let Some(max_fd) = relay_sim::relay::backend::by_name(b).and_then(|be| be.max_fd()) else {
        return; // this backend has no fd ceiling
    };
    relay_sim::sys::raise_nofile_limit().expect("raise RLIMIT_NOFILE for the test process");
    let _many_fds = FD_TABLE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let r = RelayProc::start(t, b, &["--max-clients", "100000"]);
    let mut first = registered(&r, "first");
    let mut second = registered(&r, "second");
    // Enough connections that the relay's newest fds pass the ceiling.
    let n = max_fd as usize + 64;
    let mut conns: Vec<Raw> = (0..n).map(|_| r.raw()).collect();
    // The last ones were accepted on fds beyond FD_SETSIZE - 1: RELAY_FULL, then closed.
    for c in conns.iter_mut().rev().take(16) {
        let text = c.expect_error(ErrorCode::RelayFull);
        assert!(text.contains("fd"), "{text}");
    }
    // The relay is alive and everyone it kept is served.
    first.send(b"second", b"still routing");
    assert_eq!(
        second.next(),
        Got::Deliver(b"first".to_vec(), b"still routing".to_vec())
    );
    // Freed fds come back into range: a new client registers once the relay has seen
    // others leave (until then it may still be turned away).
    conns.truncate(100);
    drop(conns);
    let mut again = register_retrying(&r, "late", ErrorCode::RelayFull);
    again.send(b"late", b"hi");
    assert_eq!(again.next(), Got::Deliver(b"late".to_vec(), b"hi".to_vec()));
}

fn beyond_max_clients(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &["--max-clients", "3"]);
    let mut kept: Vec<Raw> = ["a", "b", "c"].iter().map(|n| registered(&r, n)).collect();
    let mut fourth = r.raw();
    let text = fourth.expect_error(ErrorCode::RelayFull);
    assert!(text.contains("maximum of 3"), "{text}");
    kept[0].send(b"c", b"still served");
    assert_eq!(
        kept[2].next(),
        Got::Deliver(b"a".to_vec(), b"still served".to_vec())
    );
    // A place comes free when a client leaves.
    drop(kept.remove(1));
    register_retrying(&r, "d", ErrorCode::RelayFull);
}

// ---- lifecycle (Unix socket files) ----

#[test]
fn sigterm_and_sigint_stop_cleanly_and_remove_the_socket_file() {
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut r = RelayProc::start(Transport::Unix, "select", &[]);
        let Addr::Unix(path) = r.addr.clone() else {
            unreachable!()
        };
        assert!(path.exists());
        let mut c = registered(&r, "c");
        r.signal(sig);
        let (code, _) = r.wait_exit();
        assert_eq!(code, Some(0), "{sig} exits 0");
        assert!(!path.exists(), "{sig} removed {}", path.display());
        assert_eq!(c.next(), Got::Eof, "clients are closed");
    }
}

#[test]
fn refuses_a_live_relays_path_and_replaces_a_stale_one() {
    let live = RelayProc::start(Transport::Unix, "select", &[]);
    let Addr::Unix(path) = live.addr.clone() else {
        unreachable!()
    };
    let out = std::process::Command::new(bin())
        .args(["relay", "--listen"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("live relay") && err.contains(&*path.to_string_lossy()),
        "{err}"
    );
    // The live relay still serves, and its socket file is still there.
    assert!(path.exists());
    let mut a = registered(&live, "a");
    a.send(b"a", b"ok");
    assert_eq!(a.next(), Got::Deliver(b"a".to_vec(), b"ok".to_vec()));

    // A socket file with nobody behind it is stale: replaced.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let r = RelayProc::start_at(stale.to_str().unwrap(), dir, "select", &[]);
    let mut b = registered(&r, "b");
    b.send(b"b", b"fresh");
    assert_eq!(b.next(), Got::Deliver(b"b".to_vec(), b"fresh".to_vec()));

    // A path that is not a socket is never removed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(b"keep me")
        .unwrap();
    let out = std::process::Command::new(bin())
        .args(["relay", "--listen"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn tcp_prints_the_kernel_chosen_port() {
    let r = RelayProc::start(Transport::Tcp, "select", &[]);
    match r.addr {
        Addr::Tcp(sa) => {
            assert!(sa.ip().is_loopback());
            assert_ne!(sa.port(), 0);
        }
        ref other => panic!("expected a TCP address, got {other}"),
    }
}

/// Guarantee 2 when a client vanishes: what it sent before it closed is routed even when the
/// relay finds it gone on a write (EPIPE) before it has read all of it. In-process, so the
/// order is forced: the sender's frames sit unread past one read when the write to it fails.
#[test]
fn frames_sent_before_a_client_vanished_are_routed_when_a_write_finds_it_gone() {
    let _fds = few_fds();
    use relay_sim::protocol::{put_hello, put_send, Decoder, RelayFrame};
    use relay_sim::sys::Stream;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;
    const FRAMES: usize = 1000;
    for backend in BACKENDS {
        let mut relay = in_process(quiet(backend));
        let (relay_a, mut a) = UnixStream::pair().expect("pair");
        let (relay_x, mut x) = UnixStream::pair().expect("pair");
        relay.adopt(Stream::Unix(relay_a)).expect("adopt a");
        relay.adopt(Stream::Unix(relay_x)).expect("adopt x");
        let mut hello = Vec::new();
        put_hello(&mut hello, b"a");
        a.write_all(&hello).expect("hello a");
        hello.clear();
        put_hello(&mut hello, b"x");
        x.write_all(&hello).expect("hello x");
        relay.step(Some(Duration::ZERO)).expect("step");
        // x: FRAMES frames to a, then gone. a: one frame to x, which the relay cannot deliver.
        let mut burst = Vec::new();
        for i in 0..FRAMES {
            put_send(
                &mut burst,
                b"a",
                format!("frame {i:06} from x, sent before it closed").as_bytes(),
            );
        }
        x.write_all(&burst).expect("x writes its burst");
        drop(x);
        let mut last = Vec::new();
        put_send(&mut last, b"x", b"to x, which is gone");
        a.write_all(&last).expect("a writes");
        // Step the relay and read what a gets, until it has had everything or nothing moves.
        a.set_nonblocking(true).expect("nonblocking");
        let mut dec = Decoder::new(u32::MAX);
        let (mut delivered, mut idle) = (0usize, 0);
        while delivered < FRAMES && idle < 100 {
            relay.step(Some(Duration::from_millis(1))).expect("step");
            let mut got = 0;
            loop {
                let mut buf = [0u8; 65536];
                match a.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        dec.extend(&buf[..n]);
                        got += n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{backend}: reading a: {e}"),
                }
            }
            while let Some(f) = dec.next_frame().expect("frames decode") {
                match f.relay().expect("relay frame") {
                    RelayFrame::Deliver { src, payload } => {
                        assert_eq!(src, b"x");
                        let want = format!("frame {delivered:06} from x, sent before it closed");
                        assert_eq!(payload, want.as_bytes(), "{backend}: in order, intact");
                        delivered += 1;
                    }
                    RelayFrame::Welcome(_) => {}
                    other => panic!("{backend}: unexpected {other:?}"),
                }
            }
            idle = if got == 0 { idle + 1 } else { 0 };
        }
        assert_eq!(
            delivered, FRAMES,
            "{backend}: x's frames sent before it closed must all reach a"
        );
    }
}

/// In-process: a relay's settings for `backend`, not logging (the test reads its counts).
fn quiet(backend: &str) -> relay_sim::relay::Config {
    relay_sim::relay::Config {
        backend: backend.to_string(),
        log: false,
        ..relay_sim::relay::Config::default()
    }
}

/// The frame timeout of the frame-timeout tests.
const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// In-process, with a frame timeout of [`FRAME_TIMEOUT`].
fn frame_timed(backend: &str) -> relay_sim::relay::Relay {
    in_process(relay_sim::relay::Config {
        frame_timeout: FRAME_TIMEOUT,
        ..quiet(backend)
    })
}

/// In-process: a relay with no listener, driven by the test through `adopt` and `step`.
fn in_process(cfg: relay_sim::relay::Config) -> relay_sim::relay::Relay {
    relay_sim::relay::Relay::new(None, None, cfg).expect("relay")
}

/// In-process: a socket pair whose relay end `relay` adopts, with HELLO `name` written on ours.
fn peer(relay: &mut relay_sim::relay::Relay, name: &[u8]) -> std::os::unix::net::UnixStream {
    let (theirs, ours) = std::os::unix::net::UnixStream::pair().expect("pair");
    adopted(relay, name, theirs, ours)
}

/// In-process: a [`peer`] whose relay end takes a few KiB at a time (SO_SNDBUF 4096), so what
/// the relay queues for it drains in small steps as it reads.
fn slow_peer(relay: &mut relay_sim::relay::Relay, name: &[u8]) -> std::os::unix::net::UnixStream {
    let (theirs, ours) = std::os::unix::net::UnixStream::pair().expect("pair");
    nix::sys::socket::setsockopt(&theirs, nix::sys::socket::sockopt::SndBuf, &4096)
        .expect("SO_SNDBUF");
    adopted(relay, name, theirs, ours)
}

/// `relay` adopts `theirs`; HELLO `name` is written on `ours`, which is returned.
fn adopted(
    relay: &mut relay_sim::relay::Relay,
    name: &[u8],
    theirs: std::os::unix::net::UnixStream,
    mut ours: std::os::unix::net::UnixStream,
) -> std::os::unix::net::UnixStream {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
    let adopted = relay
        .adopt(relay_sim::sys::Stream::Unix(theirs))
        .expect("adopt");
    assert!(
        adopted.is_some(),
        "fd {fd} refused: {} open, {:?}",
        relay.connections(),
        relay.stats()
    );
    let mut hello = Vec::new();
    relay_sim::protocol::put_hello(&mut hello, name);
    ours.write_all(&hello).expect("hello");
    ours
}

/// In-process: writes `bytes` on `s` (made non-blocking), stepping the relay between writes,
/// until all are written or the relay stops reading `s` (five writes in a row find no room);
/// returns the bytes written.
fn write_until_held(
    relay: &mut relay_sim::relay::Relay,
    s: &mut std::os::unix::net::UnixStream,
    bytes: &[u8],
) -> usize {
    s.set_nonblocking(true).expect("nonblocking");
    let (mut off, mut stalled) = (0, 0);
    while off < bytes.len() && stalled < 5 {
        match s.write(&bytes[off..]) {
            Ok(n) => (off, stalled) = (off + n, 0),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stalled += 1,
            Err(e) => panic!("writing to the relay: {e}"),
        }
        relay.step(Some(std::time::Duration::ZERO)).expect("step");
    }
    off
}

/// Guarantee 2 when the client that vanishes is held back: the frames it wrote wait behind a
/// receiver that does not read when a write finds it gone. They are still routed, in order, once
/// the receiver reads; sends to the vanished client bounce meanwhile; and its name stays taken
/// until they are routed, so a client that comes back under it cannot overtake them.
/// (The relay used to close it at once and drop them: a false "lost" in runs with deaths.)
#[test]
fn frames_a_held_back_client_wrote_before_it_vanished_are_routed_when_its_receiver_reads() {
    let _fds = few_fds();
    use relay_sim::protocol::{put_send, Decoder};
    use relay_sim::relay::{Config, Relay};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;
    const FRAMES: usize = 40_000; // 2.6 MB: far more than the socket buffers and max_buffer hold
    for backend in BACKENDS {
        let mut relay = in_process(Config {
            max_buffer: 4096,
            ..quiet(backend)
        });
        let mut a = peer(&mut relay, b"a");
        let mut x = peer(&mut relay, b"x");
        let mut y = peer(&mut relay, b"y");
        let step = |relay: &mut Relay| relay.step(Some(Duration::ZERO)).expect("step");
        step(&mut relay);
        // x writes to a, which does not read, until the relay stops reading x.
        let mut burst = Vec::new();
        // Every other one goes to a name nobody holds: once x is gone, their BOUNCEs (more
        // than max_buffer) have nowhere to go, and must not hold x back behind itself.
        let to = |i: usize| if i % 2 == 1 { b"b" } else { b"a" };
        for i in 0..FRAMES {
            put_send(&mut burst, to(i), format!("frame {i:06} from x").as_bytes());
        }
        let frame_len = burst.len() / FRAMES;
        let off = write_until_held(&mut relay, &mut x, &burst);
        assert!(off < burst.len(), "{backend}: the relay must hold x back");
        assert!(relay.stats().held_back >= 1, "{backend}: counted");
        // Held back means not read: the relay's buffers stay within their bounds (one read
        // chunk of input, max_buffer plus a frame of output, per connection), not x's 2.6 MB.
        assert!(
            relay.buffered_bytes() < 512 * 1024,
            "{backend}: {} bytes buffered",
            relay.buffered_bytes()
        );
        // Whole frames to a; a partial last one is discarded.
        let written: Vec<usize> = (0..off / frame_len).filter(|&i| to(i) == b"a").collect();
        // x vanishes; y's frames to x make the relay write to it and find it gone. Until it
        // has, they go where x's frames went (dropped with it); from then on, they bounce.
        drop(x);
        let mut to_x = Vec::new();
        put_send(&mut to_x, b"x", b"to x, which is gone");
        // Waits up to 1 ms a turn: another test's fork can hold a copy of a closed socket's fd
        // until its exec, so the relay may see a close a little late.
        let frames_of = |s: &mut UnixStream, dec: &mut Decoder, relay: &mut Relay| {
            relay.step(Some(Duration::from_millis(1))).expect("step");
            received(s, dec)
        };
        use relay_sim::client::Message;
        let bounce = Message::Bounce {
            dst: "x".into(),
            payload: b"to x, which is gone".to_vec(),
        };
        let mut ydec = Decoder::new(u32::MAX);
        let mut y_got = Vec::new();
        // y keeps sending until one bounces: the relay learns of x's death only when a write
        // to it fails (a held-back sender is not read), and a write can still succeed while
        // another test's fork briefly holds a copy of x's fd.
        let mut ybuf = Vec::new();
        for _ in 0..5000 {
            if y_got.contains(&bounce) {
                break;
            }
            if ybuf.len() < 4096 {
                ybuf.extend_from_slice(&to_x);
            }
            match y.write(&ybuf) {
                Ok(n) => drop(ybuf.drain(..n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{backend}: y writes: {e}"),
            }
            y_got.extend(frames_of(&mut y, &mut ydec, &mut relay));
        }
        assert_eq!(y_got[0], Message::Welcome("y".into()), "{backend}");
        assert!(
            y_got.len() > 1 && y_got[1..].iter().all(|m| *m == bounce),
            "{backend}: sends to a vanished client bounce: {y_got:?}"
        );
        // x's name is still taken while its frames wait.
        let mut x2 = peer(&mut relay, b"x");
        let mut x2dec = Decoder::new(u32::MAX);
        let mut x2_got = Vec::new();
        for _ in 0..5000 {
            if !x2_got.is_empty() {
                break;
            }
            x2_got.extend(frames_of(&mut x2, &mut x2dec, &mut relay));
        }
        assert!(
            matches!(&x2_got[..], [Message::Error { code, .. }] if *code == ErrorCode::NameTaken as u16),
            "{backend}: x's name stays taken while its frames wait: {x2_got:?}"
        );
        // a reads: every frame x wrote arrives, in order.
        let mut adec = Decoder::new(u32::MAX);
        let (mut delivered, mut idle) = (0usize, 0);
        while delivered < written.len() && idle < 5000 {
            let got = frames_of(&mut a, &mut adec, &mut relay);
            idle = if got.is_empty() { idle + 1 } else { 0 };
            for m in got {
                match m {
                    Message::Welcome(_) => {}
                    Message::Deliver { src, payload } => {
                        assert_eq!(src, "x", "{backend}");
                        let want = format!("frame {:06} from x", written[delivered]);
                        assert_eq!(payload, want.as_bytes(), "{backend}: in order, intact");
                        delivered += 1;
                    }
                    other => panic!("{backend}: unexpected {other:?}"),
                }
            }
        }
        assert_eq!(
            delivered,
            written.len(),
            "{backend}: every frame x wrote reaches a"
        );
        assert!(
            relay.stats().held_back_ns > 0,
            "{backend}: time held back, summed"
        );
        // And x's connection is closed (it used to stay open for good when a BOUNCE for a
        // vanished sender was pending at its end of stream); x2 is closed after its ERROR.
        drop(x2);
        for _ in 0..2000 {
            if relay.connections() == 2 {
                break;
            }
            relay.step(Some(Duration::from_millis(1))).expect("step");
        }
        assert_eq!(relay.connections(), 2, "{backend}: only a and y are left");
        // Then the name is free again.
        let mut x3 = peer(&mut relay, b"x");
        let mut x3dec = Decoder::new(u32::MAX);
        let mut x3_got = Vec::new();
        for _ in 0..5000 {
            x3_got.extend(frames_of(&mut x3, &mut x3dec, &mut relay));
            if !x3_got.is_empty() {
                break;
            }
        }
        assert_eq!(x3_got, [Message::Welcome("x".into())], "{backend}");
    }
}

/// A vanished client held back behind a receiver that never reads does not keep its name for
/// good: after the frame timeout what it sent and is still held back is dropped, it is closed,
/// and its name is free for a client that comes back.
#[test]
fn a_vanished_client_held_back_for_good_is_closed_after_the_frame_timeout() {
    let _fds = few_fds();
    use relay_sim::protocol::{put_send, Decoder};
    use relay_sim::relay::{Config, Relay};
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};
    for backend in BACKENDS {
        let mut relay = in_process(Config {
            max_buffer: 4096,
            frame_timeout: Duration::from_millis(200),
            ..quiet(backend)
        });
        let _a = peer(&mut relay, b"a"); // never reads
        let mut x = peer(&mut relay, b"x");
        let mut y = peer(&mut relay, b"y");
        let step = |relay: &mut Relay| relay.step(Some(Duration::from_millis(1))).expect("step");
        step(&mut relay);
        // x floods a until the relay holds it back, then vanishes.
        let mut burst = Vec::new();
        for i in 0..40_000 {
            put_send(&mut burst, b"a", format!("frame {i:06} from x").as_bytes());
        }
        write_until_held(&mut relay, &mut x, &burst);
        drop(x);
        // y's sends to x make the relay find it gone (they bounce from then on).
        let mut to_x = Vec::new();
        put_send(&mut to_x, b"x", b"?");
        y.set_nonblocking(true).expect("nonblocking"); // it never reads its bounces
        let started = Instant::now();
        let mut x2: Option<(UnixStream, Decoder)> = None;
        let (mut welcomed, mut ybuf) = (false, Vec::new());
        while !welcomed && started.elapsed() < Duration::from_secs(20) {
            if ybuf.len() < 64 {
                ybuf.extend_from_slice(&to_x);
            }
            if let Ok(n) = y.write(&ybuf) {
                ybuf.drain(..n);
            }
            step(&mut relay);
            // Once the relay has given up on x, a new x registers.
            let (s, dec) =
                x2.get_or_insert_with(|| (peer(&mut relay, b"x"), Decoder::new(u32::MAX)));
            s.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(0) => x2 = None, // refused (NAME_TAKEN, then closed): try again
                Ok(n) => {
                    dec.extend(&buf[..n]);
                    while let Some(f) = dec.next_frame().expect("frames decode") {
                        let m = relay_sim::client::Message::from(f.relay().expect("frame"));
                        welcomed |= matches!(m, relay_sim::client::Message::Welcome(_));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => x2 = None,
            }
        }
        assert!(welcomed, "{backend}: x's name was never freed");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "{backend}: freed before the frame timeout: it was still held back"
        );
    }
}

/// The in-process API the harness, the fuzz target and the memory tests read: what `adopt`
/// returns, the registrations it records, the counts in `stats`, the bytes it has buffered.
#[test]
fn the_relay_api_reports_what_it_did() {
    let _fds = few_fds();
    use relay_sim::protocol::{put_hello, put_send};
    use relay_sim::relay::Config;
    use relay_sim::sys::Stream;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;
    let mut relay = in_process(Config {
        max_clients: 2,
        ..quiet("select")
    });
    relay.record_registrations();
    let mut ends = Vec::new();
    let mut serials = Vec::new();
    for _ in 0..3 {
        let (theirs, ours) = UnixStream::pair().expect("pair");
        serials.push(relay.adopt(Stream::Unix(theirs)).expect("adopt"));
        ends.push(ours);
    }
    assert_eq!(
        serials,
        [Some(0), Some(1), None],
        "the third is past --max-clients"
    );
    assert_eq!(relay.connections(), 2);
    let mut bytes = Vec::new();
    put_hello(&mut bytes, b"a");
    put_send(&mut bytes, b"b", b"one");
    put_send(&mut bytes, b"b", b"two");
    put_send(&mut bytes, b"nobody", b"three");
    ends[0].write_all(&bytes).expect("a writes");
    bytes.clear();
    put_hello(&mut bytes, b"b");
    ends[1].write_all(&bytes).expect("b writes");
    // b registers in its own read; a's frames may be read before it: step until both are in.
    for _ in 0..100 {
        relay.step(Some(Duration::from_millis(1))).expect("step");
        if relay.stats().delivered + relay.stats().bounced >= 2 {
            break;
        }
    }
    let mut names = relay.take_registrations();
    names.sort();
    assert_eq!(
        names,
        [
            (0, b"a".to_vec().into_boxed_slice()),
            (1, b"b".to_vec().into_boxed_slice())
        ]
    );
    assert!(relay.take_registrations().is_empty(), "taken once");
    let s = relay.stats();
    assert_eq!((s.accepted, s.refused, s.errors), (2, 1, 0));
    // "one" and "two" reach b if it registered before a's frames were read; bounced otherwise.
    assert_eq!(s.delivered + s.bounced, 3, "{s:?}");
    assert!(s.bounced >= 1, "to nobody: {s:?}");
    // Each has read into a first-size input buffer; output buffers are a few small frames.
    let first = relay_sim::protocol::FIRST_CHUNK;
    let buffered = relay.buffered_bytes();
    assert!(
        (2 * first..2 * first + 1024).contains(&buffered),
        "two connections hold {buffered} bytes of buffers"
    );
}

/// `--frame-timeout` bounds one frame, from its first byte: a client that streams without
/// pause, every read ending part-way through a frame, is never taken for a slow one.
/// (The timer used to start at the first partial frame and survive every later one, so a
/// steady stream was closed one frame timeout after it began.)
#[test]
fn a_steady_stream_whose_reads_end_mid_frame_is_not_timed_out() {
    let _fds = few_fds();
    use relay_sim::client::Message;
    use relay_sim::protocol::{put_send, Decoder};
    use std::time::{Duration, Instant};
    for backend in BACKENDS {
        let mut relay = frame_timed(backend);
        let mut a = peer(&mut relay, b"a");
        let mut b = peer(&mut relay, b"b");
        let mut frame = Vec::new();
        put_send(&mut frame, b"b", &[7u8; 100]);
        let half = frame.len() / 2;
        let (mut sent, mut got) = (0u64, 0u64);
        let mut dec = Decoder::new(u32::MAX);
        let started = Instant::now();
        // Each write completes the last frame and starts the next: no read ends on a boundary.
        a.write_all(&frame[..half]).expect("a writes");
        while started.elapsed() < FRAME_TIMEOUT * 4 {
            a.write_all(&frame[half..]).expect("a writes");
            a.write_all(&frame[..half]).expect("a writes");
            sent += 1;
            relay.step(Some(Duration::ZERO)).expect("step");
            got += received(&mut b, &mut dec)
                .iter()
                .filter(|m| matches!(m, Message::Deliver { .. }))
                .count() as u64;
        }
        let s = relay.stats();
        assert_eq!(
            s.errors, 0,
            "{backend}: a was taken for a slow client: {s:?}"
        );
        assert!(
            got + 2 >= sent && sent > 10,
            "{backend}: {got} of {sent} delivered"
        );
    }
}

/// The relay's log, read by a learner beside the code: each accept, registration, error and
/// disconnect, naming the client, its connection and fd, and why it ended.
#[test]
fn the_relay_log_tells_what_happened_to_each_client() {
    // a's message to itself comes back after the relay has handled everything that was ready
    // when a sent it (the kernel marks a closed peer's socket readable at close): a barrier.
    fn barrier(a: &mut Raw) {
        a.send(b"a", b"sync");
        assert_eq!(a.next(), Got::Deliver(b"a".to_vec(), b"sync".to_vec()));
    }
    for b in BACKENDS {
        let mut r = RelayProc::start_logged(Transport::Unix, b, None);
        let mut a = registered(&r, "a");
        let mut peer = registered(&r, "b");
        a.send(b"b", b"hi");
        assert_eq!(peer.next(), Got::Deliver(b"a".to_vec(), b"hi".to_vec()));
        let mut early = r.raw();
        early.send(b"b", b"before HELLO");
        early.expect_error(ErrorCode::NotRegistered);
        drop(early);
        barrier(&mut a);
        // c closes with a DELIVER it never read: on a Unix socket the relay's read finds a reset.
        let c = registered(&r, "c");
        a.send(b"c", b"never read");
        barrier(&mut a);
        drop(c);
        barrier(&mut a);
        // d closes in the middle of a frame: the log says how much was cut off.
        let mut d = registered(&r, "d");
        d.write(&[0, 0, 0, 9, 2, b'a']);
        drop(d);
        barrier(&mut a);
        r.signal(nix::sys::signal::Signal::SIGTERM);
        let (code, log) = r.wait_exit();
        assert_eq!(code, Some(0));
        // fd numbers depend on the backend (epoll holds one more) and the socket path on the run.
        let log: Vec<String> = log.lines().map(mask_fds).collect();
        let want = [
            format!("relay: listening on {} (backend {b}, max-frame 1048576, max-buffer 65536, max-clients 1000)", r.addr),
            "relay: accept() -> fd N: a new connection (conn 0)".into(),
            "relay: register: conn 0 (fd N) is a".into(),
            "relay: accept() -> fd N: a new connection (conn 1)".into(),
            "relay: register: conn 1 (fd N) is b".into(),
            "relay: accept() -> fd N: a new connection (conn 2)".into(),
            "relay: error: conn 2 (fd N, unregistered): NOT_REGISTERED: SEND before HELLO; the first frame must be HELLO; closing it".into(),
            "relay: disconnect: conn 2 (fd N, unregistered): closed after error".into(),
            "relay: accept() -> fd N: a new connection (conn 2)".into(),
            "relay: register: conn 2 (fd N) is c".into(),
            "relay: c (conn 2, fd N): read failed: Connection reset by peer (os error 104); routing what it sent".into(),
            "relay: disconnect: c (conn 2, fd N): closed by client".into(),
            "relay: accept() -> fd N: a new connection (conn 2)".into(),
            "relay: register: conn 2 (fd N) is d".into(),
            "relay: disconnect: d (conn 2, fd N): closed by client mid-frame (6 bytes of a truncated frame discarded)".into(),
            "relay: disconnect: a (conn 0, fd N): relay stopping".into(),
            "relay: disconnect: b (conn 1, fd N): relay stopping".into(),
            "relay: stopped: 5 connections (0 refused), 6 delivered, 0 bounced, 1 errors, held back 0 times".into(),
        ];
        assert_eq!(log, want, "{b}");
    }
}

/// A log line with each `fd 12` written `fd N`.
fn mask_fds(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("fd ") {
        let digits = rest[i + 3..].bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..i + 3]);
        out.push_str(if digits > 0 { "N" } else { "" });
        rest = &rest[i + 3 + digits..];
    }
    out.push_str(rest);
    out
}

/// Out of fds: accept() fails with EMFILE and the waiting client would make the listener
/// readable forever. The relay spends its reserve fd to accept it and turn it away with
/// RELAY_FULL, says in its log what to raise, and serves everyone it holds.
#[test]
fn a_relay_out_of_fds_turns_newcomers_away_and_serves_the_rest() {
    for b in BACKENDS {
        let mut r = RelayProc::start_logged(Transport::Unix, b, Some(64));
        let mut kept = vec![registered(&r, "a")];
        let refused = loop {
            let mut c = r.raw();
            // A refused client may find the relay gone before its HELLO is written (EPIPE);
            // the ERROR is still there to read.
            let mut hello = Vec::new();
            relay_sim::protocol::put_hello(&mut hello, format!("c{}", kept.len()).as_bytes());
            let _ = c.stream.write_all(&hello);
            match c.next() {
                Got::Welcome(_) => kept.push(c),
                Got::Error(code, text) => break (code, text),
                other => panic!("{b}: {other:?}"),
            }
            assert!(kept.len() < 64, "{b}: never ran out of fds");
        };
        assert_eq!(
            refused,
            (
                ErrorCode::RelayFull as u16,
                "the relay is out of file descriptors".into()
            ),
            "{b}"
        );
        // (How many fit depends on what the relay inherited: cargo's jobserver pipes, for one.)
        assert!(kept.len() >= 2, "{b}: only {} kept", kept.len());
        // Still serving, and a place comes free when a client leaves.
        kept[0].send(b"c1", b"still here");
        assert_eq!(
            kept[1].next(),
            Got::Deliver(b"a".to_vec(), b"still here".to_vec())
        );
        drop(kept.pop());
        register_retrying(&r, "late", ErrorCode::RelayFull);
        drop(kept);
        r.signal(nix::sys::signal::Signal::SIGTERM);
        let (code, log) = r.wait_exit();
        assert_eq!(code, Some(0));
        assert!(
            log.contains("relay: accept: Too many open files (os error 24); raise the open-files limit (ulimit -n)"),
            "{b}: {log}"
        );
        assert!(!log.contains("accept failed"), "{b}: {log}");
    }
}

/// In-process: every frame `s` has received so far, read until the socket has nothing more.
fn received(
    s: &mut std::os::unix::net::UnixStream,
    dec: &mut relay_sim::protocol::Decoder,
) -> Vec<relay_sim::client::Message> {
    use std::io::Read;
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => dec.extend(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading from the relay: {e}"),
        }
    }
    let mut got = Vec::new();
    while let Some(f) = dec.next_frame().expect("relay frames decode") {
        got.push(relay_sim::client::Message::from(
            f.relay().expect("relay frame"),
        ));
    }
    got
}

/// `--inject` at rate 1, in-process: each fault does exactly what it says to every DELIVER it
/// can apply to (the verifier's tests rely on each kind breaking its promise, and only that one).
#[test]
fn each_injected_fault_breaks_exactly_its_promise() {
    let _fds = few_fds();
    use relay_sim::client::Message;
    use relay_sim::protocol::{put_send, Decoder};
    use relay_sim::relay::inject::{Fault, Inject};
    use relay_sim::relay::Config;
    use std::time::Duration;
    const N: usize = 50;
    // Mixed bits, so that setting or clearing a bit instead of flipping it shows.
    let payload = |i: usize| -> Vec<u8> {
        let mut p = vec![0x55u8; 64];
        p[0] = i as u8;
        p[63] = 0xAA;
        p
    };
    for (name, fault) in Fault::ALL {
        let mut relay = in_process(Config {
            inject: Some(Inject {
                fault,
                rate: 1.0,
                seed: 1,
            }),
            ..quiet("select")
        });
        let mut ends: Vec<_> = [b"a", b"b", b"c"]
            .iter()
            .map(|n| (peer(&mut relay, *n), Decoder::new(u32::MAX)))
            .collect();
        relay.step(Some(Duration::ZERO)).expect("step");
        for (s, dec) in &mut ends {
            assert!(
                matches!(received(s, dec)[..], [Message::Welcome(_)]),
                "{name}"
            );
        }
        // All N in one write, read by the relay in one read: b's queue holds them all at once.
        let mut burst = Vec::new();
        for i in 0..N {
            put_send(&mut burst, b"b", &payload(i));
        }
        assert!(burst.len() < relay_sim::protocol::FIRST_CHUNK);
        ends[0].0.write_all(&burst).expect("a writes");
        relay.step(Some(Duration::from_secs(1))).expect("step");
        relay.step(Some(Duration::ZERO)).expect("step");
        if fault == Fault::Reorder {
            // Then c's burst: a reorder swaps only within a pair, so c's first message does
            // not overtake a's last. Then one more from a, once b's queue was written: with
            // nothing of a's still queued, it goes as it is.
            burst.clear();
            for i in 0..N {
                put_send(&mut burst, b"b", &payload(100 + i));
            }
            ends[2].0.write_all(&burst).expect("c writes");
            relay.step(Some(Duration::from_secs(1))).expect("step");
            burst.clear();
            put_send(&mut burst, b"b", &payload(200));
            ends[0].0.write_all(&burst).expect("a writes");
            relay.step(Some(Duration::from_secs(1))).expect("step");
            relay.step(Some(Duration::ZERO)).expect("step");
        }
        let got: Vec<Vec<(String, Vec<u8>)>> = ends
            .iter_mut()
            .map(|(s, dec)| {
                received(s, dec)
                    .into_iter()
                    .map(|m| match m {
                        Message::Deliver { src, payload } => (src, payload),
                        other => panic!("{name}: {other:?}"),
                    })
                    .collect()
            })
            .collect();
        let (to_a, to_b, to_c) = (&got[0], &got[1], &got[2]);
        let from_a = |order: &[usize]| -> Vec<(String, Vec<u8>)> {
            order
                .iter()
                .map(|&i| ("a".to_string(), payload(i)))
                .collect()
        };
        let s = relay.stats().clone();
        let injected = s.injected as usize;
        match fault {
            Fault::Drop | Fault::Delay => {
                assert!(got.iter().all(Vec::is_empty), "{name}: {got:?}");
                assert_eq!((injected, s.delivered), (N, 0), "{name}");
            }
            Fault::Duplicate => {
                let twice: Vec<usize> = (0..N).flat_map(|i| [i, i]).collect();
                assert_eq!(to_b, &from_a(&twice), "{name}");
                assert_eq!((injected, s.delivered), (N, 2 * N as u64), "{name}");
            }
            Fault::Reorder => {
                // Each one overtakes the one before it still in the queue: 1, 2, ..., N-1, 0.
                let mut want = from_a(&(1..N).chain([0]).collect::<Vec<_>>());
                let from_c = (1..N)
                    .chain([0])
                    .map(|i| ("c".to_string(), payload(100 + i)));
                want.extend(from_c);
                want.push(("a".to_string(), payload(200)));
                assert_eq!(to_b, &want, "{name}");
                assert_eq!(
                    (injected, s.delivered),
                    (2 * N - 2, 2 * N as u64 + 1),
                    "{name}"
                );
            }
            Fault::Corrupt => {
                assert_eq!(to_b.len(), N, "{name}");
                let mut last_byte = 0;
                for (i, (src, p)) in to_b.iter().enumerate() {
                    assert_eq!(src, "a");
                    let want = payload(i);
                    let flipped: Vec<(usize, u32)> = (0..p.len())
                        .map(|k| (k, (p[k] ^ want[k]).count_ones()))
                        .filter(|&(_, bits)| bits > 0)
                        .collect();
                    assert_eq!(flipped.len(), 1, "{name}: message {i}: one byte changed");
                    assert_eq!(flipped[0].1, 1, "{name}: message {i}: by one bit");
                    last_byte = last_byte.max(flipped[0].0);
                }
                assert!(
                    last_byte >= 48,
                    "{name}: the flipped bit is anywhere in the payload"
                );
                assert_eq!(injected, N, "{name}");
            }
            Fault::Misroute => {
                assert!(to_b.is_empty(), "{name}: {to_b:?}");
                assert_eq!(to_a.len() + to_c.len(), N, "{name}");
                assert!(
                    !to_a.is_empty() && !to_c.is_empty(),
                    "{name}: to anyone but b"
                );
                assert!(to_a.iter().chain(to_c).all(|(src, _)| src == "a"), "{name}");
                assert_eq!(injected, N, "{name}");
            }
            Fault::Spoof => {
                assert_eq!(to_b.len(), N, "{name}");
                let srcs: std::collections::BTreeSet<&str> =
                    to_b.iter().map(|(s, _)| s.as_str()).collect();
                assert_eq!(srcs, ["b", "c"].into(), "{name}: any name but a's");
                let payloads: Vec<&Vec<u8>> = to_b.iter().map(|(_, p)| p).collect();
                assert_eq!(
                    payloads,
                    (0..N)
                        .map(payload)
                        .collect::<Vec<_>>()
                        .iter()
                        .collect::<Vec<_>>(),
                    "{name}"
                );
                assert_eq!(injected, N, "{name}");
            }
        }
    }
}

/// A client that shuts down its reading side makes the relay's writes to it fail (EPIPE) while
/// it still sends: the relay drops what it owed it and bounces new sends to it, but routes
/// what it sends until it closes (a write failure is not the end of its input).
#[test]
fn a_client_that_stopped_reading_is_still_heard() {
    let _fds = few_fds();
    use relay_sim::client::Message;
    use relay_sim::protocol::{put_send, Decoder};
    use relay_sim::relay::Relay;
    use std::time::Duration;
    for backend in BACKENDS {
        let mut relay = in_process(quiet(backend));
        let mut x = peer(&mut relay, b"x");
        let mut y = peer(&mut relay, b"y");
        let mut ydec = Decoder::new(u32::MAX);
        let step = |relay: &mut Relay| relay.step(Some(Duration::from_millis(100))).expect("step");
        step(&mut relay);
        assert_eq!(received(&mut y, &mut ydec), [Message::Welcome("y".into())]);
        x.shutdown(std::net::Shutdown::Read).expect("shutdown");
        let mut bytes = Vec::new();
        put_send(&mut bytes, b"x", b"owed, then dropped");
        y.write_all(&bytes).expect("y writes");
        step(&mut relay); // the write to x fails: x is gone for sends
        bytes.clear();
        put_send(&mut bytes, b"x", b"bounces");
        y.write_all(&bytes).expect("y writes");
        step(&mut relay);
        bytes.clear();
        put_send(&mut bytes, b"y", b"still heard");
        x.write_all(&bytes).expect("x writes");
        step(&mut relay);
        assert_eq!(
            received(&mut y, &mut ydec),
            [
                Message::Bounce {
                    dst: "x".into(),
                    payload: b"bounces".to_vec()
                },
                Message::Deliver {
                    src: "x".into(),
                    payload: b"still heard".to_vec()
                }
            ],
            "{backend}"
        );
        assert_eq!(
            relay.connections(),
            2,
            "{backend}: x is open until it closes"
        );
        drop(x);
        // Its end of stream is read in the next turn that sees it (a wait can return early).
        for _ in 0..20 {
            if relay.connections() == 1 {
                break;
            }
            step(&mut relay);
        }
        assert_eq!(relay.connections(), 1, "{backend}: x closed");
    }
}

/// `--trace`, in-process: each wait (how many fds were ready, after how long, and the empty
/// busy-polls before it counted rather than listed), each registration and each routed frame,
/// naming the clients; past the cap, events are counted as cut.
#[test]
fn the_relay_trace_tells_each_wait_and_each_frame() {
    let _fds = few_fds();
    use relay_sim::protocol::put_send;
    use relay_sim::relay::{Config, Relay, Spin};
    use std::time::{Duration, Instant};
    let send = |s: &mut std::os::unix::net::UnixStream, dst: &[u8], p: &[u8]| {
        let mut bytes = Vec::new();
        put_send(&mut bytes, dst, p);
        s.write_all(&bytes).expect("write");
    };
    let mut relay = in_process(Config {
        trace: Some(1000),
        spin: Spin::For(Duration::from_millis(20)),
        ..quiet("select")
    });
    let step = |relay: &mut Relay, ms| relay.step(Some(Duration::from_millis(ms))).expect("step");
    let mut a = peer(&mut relay, b"a");
    step(&mut relay, 1000);
    send(&mut a, b"b", b"hi");
    step(&mut relay, 1000);
    let _b = peer(&mut relay, b"b");
    step(&mut relay, 1000);
    send(&mut a, b"b", b"yo");
    step(&mut relay, 1000);
    // Quiet: the relay polls for its 20 ms, then blocks in each wait for the whole 30 ms
    // (three waits that begin after the window, however the machine schedules this thread).
    let silent = Instant::now();
    let mut after_window = 0;
    while after_window < 3 {
        if silent.elapsed() > Duration::from_millis(25) {
            after_window += 1;
        }
        step(&mut relay, 30);
    }
    send(&mut a, b"b", b"again");
    step(&mut relay, 1000);
    let trace = relay.take_trace().expect("tracing");
    assert_eq!(trace.cut, 0);
    let lines: Vec<String> = trace.events.iter().map(|(_, e)| mask_fds(e)).collect();
    let mut want = [
        "accept() -> fd N: a new connection (conn 0)",
        "register: conn 0 (fd N) is a",
        "SEND from a (conn 0, fd N) to \"b\": nobody holds that name -> BOUNCE (2 bytes)",
        "accept() -> fd N: a new connection (conn 1)",
        "register: conn 1 (fd N) is b",
        "SEND from a (conn 0, fd N) -> DELIVER to b (conn 1, fd N) (2 bytes)",
        "SEND from a (conn 0, fd N) -> DELIVER to b (conn 1, fd N) (5 bytes)",
    ]
    .into_iter()
    .peekable();
    for l in &lines {
        want.next_if(|w| l == w);
    }
    assert_eq!(
        want.next(),
        None,
        "missing from the trace, in this order:\n{lines:#?}"
    );
    let wait = "select() watching 4 fds (listener, stop pipe, 2 clients): ";
    let blocked: Vec<f64> = lines
        .iter()
        .filter_map(|l| {
            l.strip_prefix(wait)?
                .strip_prefix("0 ready after ")?
                .strip_suffix(" ms")?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        !blocked.is_empty() && blocked.iter().all(|&ms| ms >= 29.0),
        "once the polling window is over, each wait blocks: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(wait)
            && l.contains(" ready after ")
            && l.contains(" (busy-polled ")),
        "the empty polls are counted: {lines:#?}"
    );

    // A cap of 3: the first three events are kept, the rest counted.
    let mut relay = in_process(Config {
        trace: Some(3),
        ..quiet("select")
    });
    let mut a = peer(&mut relay, b"a");
    for i in 0..5u8 {
        send(&mut a, b"a", &[i]);
        step(&mut relay, 1000);
    }
    let trace = relay.take_trace().expect("tracing");
    assert_eq!(trace.events.len(), 3);
    assert!(trace.cut >= 5, "{trace:?}");
}

/// `--frame-timeout` counts from a frame's first byte: a frame trickled a byte at a time, each
/// read making progress, is closed one frame timeout after it began (progress does not restart
/// the clock); a registered client that sends nothing at all is never timed out.
#[test]
fn the_frame_timeout_counts_from_a_frames_first_byte_and_spares_an_idle_client() {
    let _fds = few_fds();
    use relay_sim::client::Message;
    use relay_sim::protocol::{put_send, Decoder};
    use std::time::{Duration, Instant};
    for backend in BACKENDS {
        let mut relay = frame_timed(backend);
        let mut idle = peer(&mut relay, b"idle");
        let mut slow = peer(&mut relay, b"slow");
        let mut dec = Decoder::new(u32::MAX);
        relay.step(Some(Duration::ZERO)).expect("step");
        let mut frame = Vec::new();
        put_send(&mut frame, b"idle", b"trickled, never finished");
        let started = Instant::now();
        let (mut sent, mut closed) = (0, None);
        // A byte, read at once, then a wait of 10 ms with nothing to read: the frame but its
        // last byte takes 34 turns, at least 340 ms.
        while closed.is_none() && started.elapsed() < FRAME_TIMEOUT * 10 {
            if sent + 1 < frame.len() {
                let _ = slow.write_all(&frame[sent..sent + 1]); // EPIPE once it is closed
                sent += 1;
            }
            relay.step(Some(Duration::ZERO)).expect("step");
            relay.step(Some(Duration::from_millis(10))).expect("step");
            if relay.stats().errors > 0 {
                closed = Some((started.elapsed(), sent));
            }
        }
        let (after, sent) = closed.expect("the trickled frame is timed out");
        assert!(
            after >= FRAME_TIMEOUT,
            "{backend}: closed after only {after:?}"
        );
        assert!(
            sent + 1 < frame.len(),
            "{backend}: closed {after:?} after the frame's first byte, once the trickle was over: \
             each byte restarted the clock"
        );
        assert!(matches!(
            received(&mut slow, &mut dec)[..],
            [Message::Welcome(_), Message::Error { .. }]
        ));
        // The idle client outlives two more timeouts untouched.
        let quiet = Instant::now();
        while quiet.elapsed() < FRAME_TIMEOUT * 2 {
            relay.step(Some(Duration::from_millis(10))).expect("step");
        }
        drop(slow);
        // The relay reads slow's end of stream in a turn or two (what slow wrote after the
        // ERROR is discarded first; a wait can return early): wait for it, boundedly.
        for _ in 0..200 {
            if relay.connections() == 1 {
                break;
            }
            relay.step(Some(Duration::from_millis(10))).expect("step");
        }
        assert_eq!(
            relay.stats().errors,
            1,
            "{backend}: the idle client was timed out"
        );
        assert_eq!(relay.connections(), 1, "{backend}");
        assert_eq!(
            received(&mut idle, &mut Decoder::new(u32::MAX)),
            [Message::Welcome("idle".into())]
        );
    }
}

/// select() can watch fds 0..=1023 (FD_SETSIZE): the relay keeps a client on fd 1023 and turns
/// one on fd 1024 away with RELAY_FULL, saying why.
#[test]
fn select_keeps_fd_1023_and_turns_fd_1024_away() {
    use relay_sim::client::Message;
    use relay_sim::protocol::{put_hello, Decoder};
    use relay_sim::relay::Config;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    relay_sim::sys::raise_nofile_limit().expect("raise RLIMIT_NOFILE for the test process");
    // Alone in the fd table: nothing else here holds fds that high.
    let _all_fds = FD_TABLE.write().unwrap_or_else(|p| p.into_inner());
    let mut relay = in_process(Config { ..quiet("select") });
    for (at, kept) in [(1023, true), (1024, false)] {
        let (theirs, mut ours) = UnixStream::pair().expect("pair");
        let high = nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(at))
            .expect("dup to a high fd");
        // SAFETY: fcntl just returned this fd, open and owned by nobody else.
        let theirs = UnixStream::from(unsafe { OwnedFd::from_raw_fd(high) });
        assert_eq!(theirs.as_raw_fd(), at, "fd {at} was free");
        let adopted = relay
            .adopt(relay_sim::sys::Stream::Unix(theirs))
            .expect("adopt");
        assert_eq!(adopted.is_some(), kept, "fd {at}");
        let mut hello = Vec::new();
        put_hello(&mut hello, format!("fd{at}").as_bytes());
        let _ = ours.write_all(&hello); // EPIPE when turned away
        relay.step(Some(std::time::Duration::ZERO)).expect("step");
        let want = if kept {
            Message::Welcome("fd1023".into())
        } else {
            Message::Error {
                code: ErrorCode::RelayFull as u16,
                text: "fd 1024 is beyond what the select backend can watch (max 1023)".into(),
            }
        };
        assert_eq!(received(&mut ours, &mut Decoder::new(u32::MAX)), [want]);
    }
}

/// Backpressure with hysteresis: a sender held back at `max_buffer` resumes once its receiver's
/// queue has drained to half of it: not before (it would be held back again at once, a turn per
/// frame), and not only once the queue is empty (the receiver would wait on the sender).
#[test]
fn a_held_back_sender_resumes_when_the_queue_is_down_to_half() {
    let _fds = few_fds();
    use relay_sim::protocol::put_send;
    use relay_sim::relay::{Config, Relay};
    use std::io::Read;
    use std::time::Duration;
    const MAX: usize = 64 * 1024;
    let mut relay = in_process(Config {
        max_buffer: MAX,
        ..quiet("select")
    });
    // The relay's end of a's socket takes little at a time, so a's queue drains in steps of
    // a few KiB as a reads, and the moment x resumes shows.
    let mut a = slow_peer(&mut relay, b"a");
    let mut x = peer(&mut relay, b"x");
    relay.step(Some(Duration::ZERO)).expect("step");
    let mut burst = Vec::new();
    for i in 0..400u32 {
        put_send(&mut burst, b"a", &[(i % 251) as u8; 1000]);
    }
    let off = write_until_held(&mut relay, &mut x, &burst);
    assert!(off < burst.len(), "x is held back");
    let q = |relay: &Relay| relay.queued(b"a").expect("a is registered");
    assert!(q(&relay) >= MAX, "held back at the bound: {}", q(&relay));
    // a reads a little at a time; each time x resumes, a's queue grows again: note its length
    // before that turn (the turn's write, a few KiB, took it down to where x resumed).
    a.set_nonblocking(true).expect("nonblocking");
    let (mut resumed_at, mut last, mut buf) = (Vec::new(), q(&relay), [0u8; 1024]);
    for _ in 0..20_000 {
        match a.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("a reads: {e}"),
        }
        relay.step(Some(Duration::ZERO)).expect("step");
        let now = q(&relay);
        if now > last {
            resumed_at.push(last);
        }
        last = now;
        if resumed_at.len() >= 3 {
            break;
        }
    }
    assert!(
        resumed_at.len() >= 3,
        "x resumed {} times",
        resumed_at.len()
    );
    for at in resumed_at {
        assert!(
            at > MAX / 2 - 8 * 1024 && at <= MAX / 2 + 8 * 1024,
            "x resumed with {at} bytes queued for a (bound {MAX}, resume at half)"
        );
    }
}

/// Idle buffers shrink back: a receiver's output buffer that grew past 256 KiB for a burst is
/// given back once written (a relay's memory follows what is queued now, not its largest
/// burst ever); one that stayed within that is kept for the next burst (no allocation each).
#[test]
fn an_output_buffer_that_grew_for_a_burst_is_given_back_once_written() {
    let _fds = few_fds();
    use relay_sim::protocol::{put_send, Decoder};
    use relay_sim::relay::Config;
    use std::time::Duration;
    let mut relay = in_process(Config {
        max_buffer: 4 << 20,
        ..quiet("select")
    });
    // a's socket takes little, so a burst to a waits in the relay's buffer.
    let mut a = slow_peer(&mut relay, b"a");
    let mut x = peer(&mut relay, b"x");
    relay.step(Some(Duration::ZERO)).expect("step");
    let mut adec = Decoder::new(u32::MAX);
    received(&mut a, &mut adec);
    for (kib, kept) in [(150, true), (1500, false)] {
        let mut burst = Vec::new();
        for _ in 0..kib {
            put_send(&mut burst, b"a", &[7u8; 1000]);
        }
        let off = write_until_held(&mut relay, &mut x, &burst);
        assert_eq!(off, burst.len(), "{kib} KiB: x is not held back");
        let (mut got, mut idle) = (0, 0);
        while got < kib && idle < 10_000 {
            relay.step(Some(Duration::ZERO)).expect("step");
            let n = received(&mut a, &mut adec).len();
            idle = if n == 0 { idle + 1 } else { 0 };
            got += n;
        }
        assert_eq!(got, kib, "a got every frame of the {kib} KiB burst");
        relay.step(Some(Duration::ZERO)).expect("step");
        let buffered = relay.buffered_bytes();
        if kept {
            assert!(
                buffered >= 256 << 10,
                "{kib} KiB: the buffer is kept ({buffered} bytes)"
            );
        } else {
            assert!(
                buffered < 256 << 10,
                "{kib} KiB: the buffer is given back ({buffered} bytes)"
            );
        }
    }
}

/// A receiver that always lags but never lets its queue empty: its output buffer is compacted
/// as it is written, so it stays near `max_buffer` however much passes through it (without
/// that, written bytes would pile up at its front until the queue next emptied).
#[test]
fn a_queue_that_never_empties_does_not_creep() {
    let _fds = few_fds();
    use relay_sim::protocol::{put_send, Decoder};
    use relay_sim::relay::Config;
    use std::io::Write;
    use std::time::Duration;
    // Below one read chunk (64 KiB), so the written bytes outgrow the unwritten ones.
    const MAX: usize = 32 << 10;
    let mut relay = in_process(Config {
        max_buffer: MAX,
        ..quiet("select")
    });
    let mut b = slow_peer(&mut relay, b"b");
    let mut x = peer(&mut relay, b"x");
    x.set_nonblocking(true).expect("nonblocking");
    relay.step(Some(Duration::ZERO)).expect("step");
    let mut dec = Decoder::new(u32::MAX);
    received(&mut b, &mut dec);
    let mut stream = Vec::new();
    for _ in 0..20_000 {
        put_send(&mut stream, b"b", &[7u8; 1000]); // 20 MB in all
    }
    let (mut off, mut got, mut peak, mut lowest) = (0, 0, 0, usize::MAX);
    let mut buf = [0u8; 3000];
    while got < 20_000 {
        if off < stream.len() {
            match x.write(&stream[off..(off + (64 << 10)).min(stream.len())]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("x writes: {e}"),
            }
        }
        relay.step(Some(Duration::ZERO)).expect("step");
        // b reads a little each turn, so the relay always holds a backlog for it.
        if let Ok(n) = std::io::Read::read(&mut b, &mut buf) {
            dec.extend(&buf[..n]);
        }
        while dec.next_frame().expect("b's stream decodes").is_some() {
            got += 1;
        }
        peak = peak.max(relay.buffered_bytes());
        if got > 1000 && off < stream.len() {
            lowest = lowest.min(relay.queued(b"b").unwrap_or(0));
        }
    }
    assert!(lowest > 0, "b's queue never emptied while x was sending");
    // b's output (MAX plus a frame unwritten, behind at most a read chunk's worth written
    // before it is compacted, in an allocation up to twice that) and two read buffers.
    let bound = 2 * (MAX + 1100 + (64 << 10)) + 2 * (64 << 10);
    assert!(peak <= bound, "peak {peak} bytes buffered, bound {bound}");
}

/// `reorder` never splits a frame: once the kernel has taken part of a receiver's last queued
/// frame, nothing is swapped in front of it. (a's messages to b go out a few KiB at a time,
/// so writes often end inside a frame; every message must still arrive whole.)
#[test]
fn reorder_never_swaps_in_front_of_a_frame_partly_written() {
    let _fds = few_fds();
    use relay_sim::client::Message;
    use relay_sim::protocol::{put_send, Decoder};
    use relay_sim::relay::inject::{Fault, Inject};
    use relay_sim::relay::Config;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;
    const N: u32 = 2000;
    let mut relay = in_process(Config {
        inject: Some(Inject {
            fault: Fault::Reorder,
            rate: 1.0,
            seed: 3,
        }),
        ..quiet("select")
    });
    let mut a = peer(&mut relay, b"a");
    let mut b = slow_peer(&mut relay, b"b");
    relay.step(Some(Duration::ZERO)).expect("step");
    b.set_nonblocking(true).expect("nonblocking");
    let payload = |i: u32| -> Vec<u8> {
        let mut p = vec![(i % 251) as u8; 700 + (i as usize * 37) % 600];
        p[..4].copy_from_slice(&i.to_be_bytes());
        p
    };
    let (mut dec, mut got, mut buf) = (Decoder::new(u32::MAX), Vec::new(), [0u8; 1500]);
    let mut read_some = |b: &mut UnixStream, dec: &mut Decoder, got: &mut Vec<u32>| {
        match b.read(&mut buf) {
            Ok(n) => dec.extend(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("b reads: {e}"),
        }
        while let Some(f) = dec.next_frame().expect("b's stream stays whole") {
            match Message::from(f.relay().expect("a relay frame")) {
                Message::Welcome(_) => {}
                Message::Deliver { src, payload: p } => {
                    assert_eq!(src, "a");
                    let i = u32::from_be_bytes(p[..4].try_into().expect("4 bytes"));
                    assert_eq!(p, payload(i), "message {i} whole");
                    got.push(i);
                }
                other => panic!("{other:?}"),
            }
        }
    };
    // 0 to 3 messages a turn against one read of 1,500 bytes: b's queue keeps emptying and
    // filling, so the last queued frame is sometimes untouched (it may be swapped) and
    // sometimes partly written (it must not be).
    let (mut frame, mut i) = (Vec::new(), 0);
    for turn in 0.. {
        for _ in 0..turn % 4 {
            if i < N {
                put_send(&mut frame, b"b", &payload(i));
                i += 1;
            }
        }
        a.write_all(&frame).expect("a writes");
        frame.clear();
        relay.step(Some(Duration::ZERO)).expect("step");
        read_some(&mut b, &mut dec, &mut got);
        if i == N {
            break;
        }
    }
    for _ in 0..100_000 {
        if got.len() == N as usize {
            break;
        }
        relay.step(Some(Duration::ZERO)).expect("step");
        read_some(&mut b, &mut dec, &mut got);
    }
    let injected = relay.stats().injected;
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every message once");
    assert!(injected > 0, "some were reordered");
}

/// The other half of `reorder`'s rule: a queued frame the kernel has not begun to take may
/// still be overtaken, also after a write that left it waiting (b never reads, so its socket
/// is full and the relay holds the tail of a's burst).
#[test]
fn reorder_swaps_with_a_queued_frame_the_kernel_has_not_begun_to_take() {
    let _fds = few_fds();
    use relay_sim::client::Message;
    use relay_sim::protocol::{put_send, Decoder};
    use relay_sim::relay::inject::{Fault, Inject};
    use relay_sim::relay::Config;
    use std::time::Duration;
    let mut relay = in_process(Config {
        max_buffer: 1 << 20,
        inject: Some(Inject {
            fault: Fault::Reorder,
            rate: 1.0,
            seed: 3,
        }),
        ..quiet("select")
    });
    let mut a = peer(&mut relay, b"a");
    let mut b = slow_peer(&mut relay, b"b");
    relay.step(Some(Duration::ZERO)).expect("step");
    let mut frames = Vec::new();
    for i in 0..100u8 {
        put_send(&mut frames, b"b", &[i; 1000]);
    }
    a.write_all(&frames).expect("a writes");
    for _ in 0..10 {
        relay.step(Some(Duration::ZERO)).expect("step");
    }
    assert!(
        relay.queued(b"b").unwrap_or(0) > 1000,
        "b's socket is full and the relay holds the rest"
    );
    let before = relay.stats().injected;
    frames.clear();
    put_send(&mut frames, b"b", &[100; 1000]);
    a.write_all(&frames).expect("a writes");
    relay.step(Some(Duration::ZERO)).expect("step");
    assert_eq!(
        relay.stats().injected,
        before + 1,
        "the new frame overtook the last one"
    );

    // Drain b: every message once, and 100 in front of the frame that was last.
    let mut dec = Decoder::new(u32::MAX);
    let mut got = Vec::new();
    while got.len() < 101 {
        relay.step(Some(Duration::ZERO)).expect("step");
        for m in received(&mut b, &mut dec) {
            if let Message::Deliver { payload, .. } = m {
                got.push(payload[0]);
            }
        }
    }
    assert_eq!(got[99], 100, "100 went in front of the last: {got:?}");
    got.sort_unstable();
    assert_eq!(got, (0..=100).collect::<Vec<u8>>(), "every message once");
}

/// The backend contract (src/relay/backend/mod.rs), on each backend by itself: a watched fd
/// is reported while ready, `Interest::NONE` and `remove` silence it, and writability is
/// reported only when asked for.
#[test]
fn every_backend_reports_what_it_watches_and_nothing_else() {
    use relay_sim::relay::backend::{by_name, Event, Interest, Token, NAMES};
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    let _fds = few_fds();
    for name in NAMES {
        let mut be = by_name(name).expect("backend");
        let (mut a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        a.write_all(b"x").expect("write"); // b is readable (and writable) from now on
        let fd = b.as_raw_fd();
        let fired = |be: &mut Box<dyn relay_sim::relay::backend::Backend>| {
            let mut ev: Vec<Event> = Vec::new();
            be.wait(Some(Duration::ZERO), &mut ev).expect("wait");
            ev
        };
        let t = Token(7);
        be.set(fd, t, Interest::READ).expect("set");
        let ev = fired(&mut be);
        assert_eq!(ev.len(), 1, "{name}: {ev:?}");
        assert!(
            ev[0].token == t && ev[0].readable && !ev[0].writable,
            "{name}: {ev:?}"
        );
        be.set(fd, t, Interest::NONE).expect("set");
        assert_eq!(fired(&mut be), vec![], "{name}: NONE watches nothing");
        let both = Interest {
            read: true,
            write: true,
        };
        be.set(fd, Token(8), both).expect("set");
        let ev = fired(&mut be);
        assert_eq!(ev.len(), 1, "{name}: {ev:?}");
        assert!(
            ev[0].token == Token(8) && ev[0].readable && ev[0].writable,
            "{name}: {ev:?}"
        );
        be.remove(fd);
        assert_eq!(fired(&mut be), vec![], "{name}: a removed fd is forgotten");
    }
}

/// epoll hands back at most as many events as its buffer holds (1,024 at first); a wait that
/// fills it grows it, so the next wait reports every ready fd (level-triggered, they are all
/// still ready).
#[test]
fn epoll_grows_its_event_buffer_until_every_ready_fd_fits() {
    use relay_sim::relay::backend::{by_name, Interest, Token};
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    relay_sim::sys::raise_nofile_limit().expect("raise RLIMIT_NOFILE for the test process");
    let _many_fds = FD_TABLE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(mut be) = by_name("epoll") else {
        return;
    };
    const N: usize = 1100;
    let pairs: Vec<_> = (0..N)
        .map(|i| {
            let (mut a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
            a.write_all(b"x").expect("write");
            be.set(b.as_raw_fd(), Token(i), Interest::READ)
                .expect("set");
            (a, b)
        })
        .collect();
    let mut counts = Vec::new();
    for _ in 0..2 {
        let mut ev = Vec::new();
        be.wait(Some(Duration::ZERO), &mut ev).expect("wait");
        counts.push(ev.len());
    }
    assert_eq!(counts, [1024, N], "the second wait sees every ready fd");
    drop(pairs);
}
