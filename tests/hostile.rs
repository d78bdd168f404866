//! Hostile clients against the real relay process: garbage, silence, slow drips, floods,
//! non-readers, name takeovers and spoofing. Everyone else must be served throughout.

#[macro_use]
mod util;

use std::io::Write;
use std::sync::mpsc;

use rand::{Rng, SeedableRng};
use relay_sim::protocol::{self, ErrorCode};
use util::*;

on_every_relay!(
    garbage_gets_an_error_and_others_carry_on,
    silence_is_closed_after_the_hello_timeout,
    a_frame_left_unfinished_is_closed_after_the_frame_timeout,
    a_connection_flood_past_capacity,
    name_takeover_attempts_never_steal_a_live_name,
    src_is_always_the_registered_name,
);

/// A registered pair that checks the relay still serves others: a self-send round trip.
#[track_caller]
fn still_served(c: &mut Raw, name: &str) {
    c.send(name.as_bytes(), b"ping");
    assert_eq!(
        c.next(),
        Got::Deliver(name.as_bytes().to_vec(), b"ping".to_vec())
    );
}

fn garbage_gets_an_error_and_others_carry_on(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &["--max-frame", "65536"]);
    let mut good = registered(&r, "good");
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
    for i in 0..200 {
        let mut c = r.raw();
        if i % 2 == 1 {
            // Half of them register first, so garbage also meets the registered state.
            assert!(matches!(
                c.hello(format!("g{i}").as_bytes()),
                Got::Welcome(_)
            ));
        }
        let len = rng.random_range(1..300);
        let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // The write may fail once the relay has answered and closed: that is fine.
        let _ = c.stream.write_all(&junk);
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        // Whatever the junk was, the relay ends the conversation: with an ERROR, or by closing
        // once the junk runs out mid-frame; it may also have routed junk that parsed as frames.
        loop {
            match c.next() {
                Got::Eof | Got::Error(..) => break,
                Got::Deliver(..) | Got::Bounce(..) | Got::Welcome(..) => {}
            }
        }
        if i % 20 == 0 {
            still_served(&mut good, "good");
        }
    }
    still_served(&mut good, "good");
    assert!(
        r.peak_rss_kib() < 64 * 1024,
        "relay peak RSS {} KiB",
        r.peak_rss_kib()
    );
}

fn silence_is_closed_after_the_hello_timeout(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &["--hello-timeout", "200ms"]);
    let mut good = registered(&r, "good");
    // Says nothing at all.
    let mut silent = r.raw();
    // Starts a HELLO and never finishes it.
    let mut half = r.raw();
    let mut hello = Vec::new();
    protocol::put_hello(&mut hello, b"half");
    half.write(&hello[..3]);
    for c in [&mut silent, &mut half] {
        let text = c.expect_error(ErrorCode::NotRegistered);
        assert!(text.contains("no HELLO within"), "{text}");
    }
    // A registered client is not subject to the HELLO timer.
    still_served(&mut good, "good");
    // And the half-registered name was never taken.
    registered(&r, "half");
}

fn a_frame_left_unfinished_is_closed_after_the_frame_timeout(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &["--frame-timeout", "200ms"]);
    let mut good = registered(&r, "good");
    let mut slow = registered(&r, "slow");
    let frame = send_bytes(b"good", b"never finished");
    slow.write(&frame[..frame.len() - 1]);
    let text = slow.expect_error(ErrorCode::BadFrame);
    assert!(text.contains("incomplete"), "{text}");
    still_served(&mut good, "good");
    // Nothing of the unfinished frame was delivered.
    good.send(b"good", b"after");
    assert_eq!(
        good.next(),
        Got::Deliver(b"good".to_vec(), b"after".to_vec())
    );
}

fn a_connection_flood_past_capacity(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &["--max-clients", "50"]);
    let mut good = registered(&r, "good");
    let mut flood: Vec<Raw> = (0..400).map(|_| r.raw()).collect();
    // At most 49 more are kept; every other one is told RELAY_FULL and closed.
    let refused = flood
        .iter_mut()
        .rev()
        .take(350)
        .map(|c| c.expect_error(ErrorCode::RelayFull))
        .count();
    assert_eq!(refused, 350);
    still_served(&mut good, "good");
    drop(flood);
    assert!(
        r.peak_rss_kib() < 32 * 1024,
        "relay peak RSS {} KiB",
        r.peak_rss_kib()
    );
    // Capacity comes back when the flood leaves.
    register_retrying(&r, "later");
}

/// Registers `name`, retrying while the relay still turns connections away.
#[track_caller]
fn register_retrying(r: &RelayProc, name: &str) -> Raw {
    for _ in 0..10_000 {
        let mut c = r.raw();
        match c.hello(name.as_bytes()) {
            Got::Welcome(_) => return c,
            Got::Error(code, _) if code == ErrorCode::RelayFull as u16 => continue,
            other => panic!("{other:?}"),
        }
    }
    panic!("capacity never came back");
}

fn name_takeover_attempts_never_steal_a_live_name(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut holder = registered(&r, "victim");
    let mut sender = registered(&r, "sender");
    // Many at once ask for the live name: all refused, the holder keeps it.
    let mut thieves: Vec<Raw> = (0..50).map(|_| r.raw()).collect();
    let mut hello = Vec::new();
    protocol::put_hello(&mut hello, b"victim");
    for t in &mut thieves {
        t.write(&hello);
    }
    for t in &mut thieves {
        t.expect_error(ErrorCode::NameTaken);
    }
    sender.send(b"victim", b"for the holder");
    assert_eq!(
        holder.next(),
        Got::Deliver(b"sender".to_vec(), b"for the holder".to_vec())
    );

    // The holder leaves while 20 race for the name: exactly one wins, and gets its mail.
    drop(holder);
    let mut winner = None;
    for _ in 0..1000 {
        let mut racers: Vec<Raw> = (0..20).map(|_| r.raw()).collect();
        for c in &mut racers {
            c.write(&hello);
        }
        let mut wins = Vec::new();
        for (i, c) in racers.iter_mut().enumerate() {
            match c.next() {
                Got::Welcome(_) => wins.push(i),
                Got::Error(code, _) => assert_eq!(code, ErrorCode::NameTaken as u16),
                other => panic!("{other:?}"),
            }
        }
        assert!(wins.len() <= 1, "{} racers got the same name", wins.len());
        if let Some(&i) = wins.first() {
            winner = Some(racers.swap_remove(i));
            break;
        }
        // Still held: the relay had not yet seen the old holder close. Race again.
    }
    let mut winner = winner.expect("the name came free");
    sender.send(b"victim", b"for the winner");
    assert_eq!(
        winner.next(),
        Got::Deliver(b"sender".to_vec(), b"for the winner".to_vec())
    );
}

fn src_is_always_the_registered_name(t: Transport, b: &str) {
    let r = RelayProc::start(t, b, &[]);
    let mut victim = registered(&r, "victim");
    let mut mallory = registered(&r, "mallory");
    // Payloads that look like frames, or like other senders' names, are just payloads.
    let mut fake_deliver = Vec::new();
    protocol::put_deliver(&mut fake_deliver, b"admin", b"trust me");
    let payloads: Vec<Vec<u8>> = vec![
        fake_deliver,
        b"\x05admin".to_vec(),
        b"admin: hello".to_vec(),
        vec![0; 40],
    ];
    for p in &payloads {
        mallory.send(b"victim", p);
    }
    for p in &payloads {
        assert_eq!(victim.next(), Got::Deliver(b"mallory".to_vec(), p.clone()));
    }
}

#[test]
fn the_socket_file_is_private_by_default_and_widened_on_request() {
    use std::os::unix::fs::PermissionsExt;
    for (extra, mode) in [(&[][..], 0o600), (&["--socket-mode", "660"][..], 0o660)] {
        let r = RelayProc::start(Transport::Unix, "select", extra);
        let relay_sim::sys::Addr::Unix(path) = &r.addr else {
            unreachable!()
        };
        let m = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{extra:?}");
    }
}

#[test]
fn listening_on_all_interfaces_warns() {
    let mut r = RelayProc::start_at("0.0.0.0:0", tempfile::tempdir().unwrap(), "select", &[]);
    r.signal(nix::sys::signal::Signal::SIGTERM);
    let (_, err) = r.wait_exit();
    assert!(
        err.contains("warning: listening on all interfaces"),
        "{err}"
    );
}

#[test]
fn relay_help_lists_every_limit_with_its_default() {
    let out = std::process::Command::new(bin())
        .args(["relay", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for (flag, default) in [
        ("--max-clients", "1000"),
        ("--max-frame", "1048576"),
        ("--max-buffer", "64KiB"),
        ("--hello-timeout", "5s"),
        ("--frame-timeout", "10s"),
        ("--socket-mode", "600"),
    ] {
        let line = text
            .lines()
            .skip_while(|l| !l.contains(flag))
            .take(4)
            .collect::<String>();
        assert!(
            line.contains(&format!("[default: {default}]")),
            "{flag}: {line}"
        );
    }
}

/// Many clients that never read while others flood them: the relay's memory stays within
/// its buffer bounds.
#[test]
fn many_non_readers_keep_the_relay_within_its_bounds() {
    const PAIRS: usize = 16;
    const FRAMES: usize = 8192; // 1 KiB each: 8 MiB per pair, 128 MiB in all
    let max_buffer = 128 * 1024;
    let max_frame = 4096;
    let r = RelayProc::start(
        Transport::Unix,
        "epoll",
        &["--max-buffer", "128KiB", "--max-frame", "4096"],
    );
    let baseline = proc_status_kib(r.pid(), "VmRSS:");
    let mut sinks: Vec<Raw> = (0..PAIRS)
        .map(|i| registered(&r, &format!("sink{i}")))
        .collect();
    let (tx, rx) = mpsc::channel::<bool>();
    let mut writers = Vec::new();
    for i in 0..PAIRS {
        let mut f = registered(&r, &format!("flood{i}"));
        let tx = tx.clone();
        writers.push(std::thread::spawn(move || {
            let mut all = Vec::with_capacity(FRAMES * 1040);
            for k in 0..FRAMES {
                let mut p = vec![(k % 251) as u8; 1024];
                p[..8].copy_from_slice(&(k as u64).to_be_bytes());
                all.extend(send_bytes(format!("sink{i}").as_bytes(), &p));
            }
            flood(&mut f, &all, tx);
            f
        }));
    }
    let held = (0..PAIRS)
        .filter(|_| rx.recv_timeout(WAIT * 3).expect("flooders report"))
        .count();
    let held_rss = proc_status_kib(r.pid(), "VmRSS:");
    // Drain everything, in order.
    for (i, s) in sinks.iter_mut().enumerate() {
        for k in 0..FRAMES {
            match s.next() {
                Got::Deliver(src, p) => {
                    assert_eq!(src, format!("flood{i}").as_bytes());
                    assert_eq!(&p[..8], &(k as u64).to_be_bytes(), "sink{i} frame {k}");
                }
                other => panic!("sink{i} frame {k}: {other:?}"),
            }
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    // Per connection: output up to max_buffer plus one frame, input up to one frame plus a read.
    let conns = 2 * PAIRS;
    let bound_kib = (conns * (max_buffer + 2 * max_frame + 64 * 1024 + 64)) as u64 / 1024;
    let peak = r.peak_rss_kib();
    eprintln!(
        "relay RSS: baseline {baseline} KiB, held back {held_rss} KiB, peak {peak} KiB; \
         buffer bound {bound_kib} KiB for {conns} connections; {held}/{PAIRS} flooders held back"
    );
    assert_eq!(held, PAIRS, "every flooder was held back");
    assert!(
        peak < baseline + bound_kib,
        "peak {peak} KiB > baseline {baseline} + bound {bound_kib} KiB"
    );
}
