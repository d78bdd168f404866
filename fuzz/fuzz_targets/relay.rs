//! The relay's per-connection state machine, driven in-process by several clients doing
//! arbitrary things (connect, register, send, write raw bytes, close). After every step the
//! relay must not have panicked, must keep its buffers within bounds, and what clients read
//! must be well-formed: a DELIVER only to a registered client, its `src` a name the relay
//! really registered, and nothing after an ERROR.
#![no_main]

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{send, MsgFlags};
use relay_sim::protocol::{self, Decoder, RelayFrame};
use relay_sim::relay::{Config, Relay};
use relay_sim::sys::Stream;

const NAMES: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"a"];
const MAX_FRAME: u32 = 256;
const MAX_BUFFER: usize = 1024;

#[derive(Arbitrary, Debug)]
enum Op {
    Connect,
    Hello {
        client: u8,
        name: u8,
    },
    Send {
        client: u8,
        dst: u8,
        payload: Vec<u8>,
    },
    Raw {
        client: u8,
        bytes: Vec<u8>,
    },
    Close {
        client: u8,
    },
    Read {
        client: u8,
    },
}

struct Client {
    sock: Option<UnixStream>,
    dec: Decoder,
    welcomed: bool,
    errored: bool,
    closed: bool,
    reading: bool,
}

fn ignore_sigpipe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: ignoring SIGPIPE installs no handler; writes to closed sockets return EPIPE.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigIgn,
            )
        };
    });
}

fn write(c: &mut Client, bytes: &[u8]) {
    if let Some(s) = &c.sock {
        let _ = send(
            std::os::fd::AsRawFd::as_raw_fd(s),
            bytes,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        );
    }
}

/// Reads what a client has and checks it.
fn drain(c: &mut Client, registered: &HashSet<Vec<u8>>) {
    let Some(s) = &mut c.sock else { return };
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                c.closed = true;
                break;
            }
            Ok(n) => c.dec.extend(&buf[..n]),
            Err(_) => break,
        }
    }
    while let Some(f) = c
        .dec
        .next_frame()
        .expect("the relay sends well-formed frames")
    {
        assert!(!c.errored, "a frame after ERROR");
        match f.relay().expect("the relay sends relay frames") {
            RelayFrame::Welcome(n) => {
                assert!(!c.welcomed, "a second WELCOME");
                assert!(
                    registered.contains(n),
                    "WELCOME for a name the relay never registered"
                );
                assert!(protocol::is_valid_name(n), "WELCOME for an invalid name");
                c.welcomed = true;
            }
            RelayFrame::Deliver { src, .. } => {
                assert!(c.welcomed, "DELIVER to an unregistered client");
                assert!(
                    registered.contains(src),
                    "DELIVER from {src:?}, a name nobody registered"
                );
            }
            RelayFrame::Bounce { .. } => assert!(c.welcomed, "BOUNCE to an unregistered client"),
            RelayFrame::Error { .. } => c.errored = true,
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    ignore_sigpipe();
    let cfg = Config {
        max_frame: MAX_FRAME,
        max_buffer: MAX_BUFFER,
        max_clients: 6,
        log: false,
        hello_timeout: Duration::from_secs(60),
        frame_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    let Ok(mut relay) = Relay::new(None, None, cfg) else {
        return;
    };
    let mut clients: Vec<Client> = Vec::new();
    relay.record_registrations();
    // Every name the relay has registered so far (raw bytes may register any valid name).
    let mut registered: HashSet<Vec<u8>> = HashSet::new();
    for op in ops.into_iter().take(64) {
        let pick = |i: u8, n: usize| if n == 0 { None } else { Some(i as usize % n) };
        match op {
            Op::Connect => {
                if clients.len() >= 8 {
                    continue;
                }
                let (ours, theirs) = UnixStream::pair().expect("socketpair");
                ours.set_nonblocking(true).expect("nonblocking");
                if relay.adopt(Stream::Unix(theirs)).is_err() {
                    continue;
                }
                clients.push(Client {
                    sock: Some(ours),
                    dec: Decoder::new(u32::MAX),
                    welcomed: false,
                    errored: false,
                    closed: false,
                    reading: true,
                });
            }
            Op::Hello { client, name } => {
                let Some(k) = pick(client, clients.len()) else {
                    continue;
                };
                let name = NAMES[name as usize % NAMES.len()];
                let mut b = Vec::new();
                protocol::put_hello(&mut b, name);
                write(&mut clients[k], &b);
            }
            Op::Send {
                client,
                dst,
                payload,
            } => {
                let Some(k) = pick(client, clients.len()) else {
                    continue;
                };
                let mut b = Vec::new();
                protocol::put_send(&mut b, NAMES[dst as usize % NAMES.len()], &payload);
                write(&mut clients[k], &b);
            }
            Op::Raw { client, bytes } => {
                let Some(k) = pick(client, clients.len()) else {
                    continue;
                };
                write(&mut clients[k], &bytes);
            }
            Op::Close { client } => {
                let Some(k) = pick(client, clients.len()) else {
                    continue;
                };
                clients[k].sock = None;
            }
            Op::Read { client } => {
                let Some(k) = pick(client, clients.len()) else {
                    continue;
                };
                // Toggle: a client that stops reading exercises backpressure.
                clients[k].reading = !clients[k].reading;
            }
        }
        for _ in 0..4 {
            relay.step(Some(Duration::ZERO)).expect("a relay step");
        }
        registered.extend(relay.take_registrations().into_iter().map(Vec::from));
        for c in clients.iter_mut().filter(|c| c.reading) {
            drain(c, &registered);
        }
        // Memory: bounded by the connections and the limits, never by the traffic.
        let bound = relay.connections() * (MAX_BUFFER + 2 * MAX_FRAME as usize + 64 * 1024 + 512);
        assert!(
            relay.buffered_bytes() <= bound,
            "{} buffered > {bound}",
            relay.buffered_bytes()
        );
    }
    relay.shutdown();
});
