//! The relay's per-connection state machine, driven in-process by several clients doing
//! arbitrary things (connect, register, send, write raw bytes, close, stop reading). After
//! every step the relay must not have panicked, must keep its buffers within bounds, and what
//! clients read must keep the protocol's promises:
//! - frames are well-formed relay frames, and nothing follows an ERROR;
//! - WELCOME comes once, for the name the relay registered for that very connection;
//! - DELIVER and BOUNCE come only to registered clients, and a DELIVER's `src` is a name the
//!   relay registered;
//! - a message sent by the harness's own SEND ops (tagged with a per-process nonce that raw
//!   bytes are never allowed to carry) arrives with `src` equal to its true sender's
//!   registered name, at the client registered under the name it was sent to.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::AsRawFd;
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
    serial: u64,
    dec: Decoder,
    welcomed: bool,
    errored: bool,
    reading: bool,
}

/// A per-process value that tags the harness's own SENDs; see the module comment.
fn nonce() -> [u8; 8] {
    static NONCE: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    *NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64
            ^ u64::from(std::process::id()).rotate_left(32)
            ^ 0x9E37_79B9_7F4A_7C15)
            .to_be_bytes()
    })
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
            s.as_raw_fd(),
            bytes,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        );
    }
}

/// What the relay registered: name by connection serial, and every name ever.
#[derive(Default)]
struct Registry {
    by_serial: HashMap<u64, Vec<u8>>,
    ever: HashSet<Vec<u8>>,
}

/// Reads what client `k` has and checks it.
fn drain(clients: &mut [Client], k: usize, reg: &Registry) {
    let me = clients[k].serial;
    let c = &mut clients[k];
    let Some(s) = &mut c.sock else { return };
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        c.dec.extend(&buf[..n]);
    }
    let mut tagged = Vec::new();
    while let Some(f) = c
        .dec
        .next_frame()
        .expect("the relay sends well-formed frames")
    {
        assert!(!c.errored, "a frame after ERROR");
        match f.relay().expect("the relay sends relay frames") {
            RelayFrame::Welcome(n) => {
                assert!(!c.welcomed, "a second WELCOME");
                assert_eq!(
                    reg.by_serial.get(&me).map(Vec::as_slice),
                    Some(n),
                    "WELCOME for a name not registered to this connection"
                );
                c.welcomed = true;
            }
            RelayFrame::Deliver { src, payload } => {
                assert!(c.welcomed, "DELIVER to an unregistered client");
                assert!(
                    reg.ever.contains(src),
                    "DELIVER from {src:?}, a name nobody registered"
                );
                if let Some(rest) = payload.strip_prefix(&nonce()[..]) {
                    tagged.push((src.to_vec(), rest.to_vec()));
                }
            }
            RelayFrame::Bounce { .. } => assert!(c.welcomed, "BOUNCE to an unregistered client"),
            RelayFrame::Error { .. } => c.errored = true,
        }
    }
    // Tagged: nonce | sender's serial (8) | the dst name it was sent to.
    let my_name = reg.by_serial.get(&me);
    for (src, rest) in tagged {
        let (serial, dst) = rest.split_at(8);
        let sender = u64::from_be_bytes(serial.try_into().expect("8 bytes"));
        assert_eq!(
            reg.by_serial.get(&sender),
            Some(&src),
            "src is not the true sender's registered name"
        );
        assert_eq!(
            my_name.map(Vec::as_slice),
            Some(dst),
            "delivered to a client not registered under the dst"
        );
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
    relay.record_registrations();
    let mut clients: Vec<Client> = Vec::new();
    let mut reg = Registry::default();
    for op in ops.into_iter().take(64) {
        let pick = |i: u8, n: usize| if n == 0 { None } else { Some(i as usize % n) };
        match op {
            Op::Connect => {
                if clients.len() >= 8 {
                    continue;
                }
                let (ours, theirs) = UnixStream::pair().expect("socketpair");
                ours.set_nonblocking(true).expect("nonblocking");
                let Ok(Some(serial)) = relay.adopt(Stream::Unix(theirs)) else {
                    continue;
                };
                clients.push(Client {
                    sock: Some(ours),
                    serial,
                    dec: Decoder::new(u32::MAX),
                    welcomed: false,
                    errored: false,
                    reading: true,
                });
            }
            Op::Hello { client, name } => {
                let Some(k) = pick(client, clients.len()) else {
                    continue;
                };
                let mut b = Vec::new();
                protocol::put_hello(&mut b, NAMES[name as usize % NAMES.len()]);
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
                let dst = NAMES[dst as usize % NAMES.len()];
                let mut p = nonce().to_vec();
                p.extend_from_slice(&clients[k].serial.to_be_bytes());
                p.extend_from_slice(dst);
                // Keep the user part out: the tag must end where the dst name ends.
                let _ = payload;
                let mut b = Vec::new();
                protocol::put_send(&mut b, dst, &p);
                write(&mut clients[k], &b);
            }
            Op::Raw { client, bytes } => {
                let Some(k) = pick(client, clients.len()) else {
                    continue;
                };
                // Raw bytes may be anything but the harness's tag (see the module comment).
                if bytes.windows(8).any(|w| w == nonce()) {
                    continue;
                }
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
        for (serial, name) in relay.take_registrations() {
            reg.ever.insert(name.to_vec());
            reg.by_serial.insert(serial, name.to_vec());
        }
        for k in 0..clients.len() {
            if clients[k].reading {
                drain(&mut clients, k, &reg);
            }
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
