//! `relay-sim relay`: the relay in the foreground.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use clap::Args as ClapArgs;

use super::parse_size;
use crate::protocol::DEFAULT_MAX_FRAME;
use crate::relay::inject::Inject;
use crate::relay::{self, backend, Config, Spin};
use crate::sys::{self, Addr, Listener};
use relay_harness::exit;

/// Flags of `relay-sim relay`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Where to listen: a Unix socket path, or HOST:PORT for TCP (e.g. 127.0.0.1:0 for any
    /// free port). The bound address is printed on stdout as `listening on ADDR`.
    #[arg(long, value_name = "ADDR", default_value = "relay-sim.sock")]
    pub listen: String,
    /// Largest frame length accepted from a client (bytes; K, M suffixes allowed).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME.to_string())]
    pub max_frame: String,
    /// Output buffered for one receiver before its senders are held back (bytes; at least 1).
    #[arg(long, value_name = "BYTES", default_value = "64KiB")]
    pub max_buffer: String,
    /// Most connections at once; more are refused with RELAY_FULL.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_clients: usize,
    /// Close a connection that has not sent HELLO this long after connecting (e.g. 5s, 500ms).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = humantime::parse_duration)]
    pub hello_timeout: std::time::Duration,
    /// Close a connection whose frame is still incomplete this long after its first byte, and
    /// one whose client has gone (a read or write failed) but is still held back this long
    /// behind a full receiver (what it sent and is still held back is then dropped).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = humantime::parse_duration)]
    pub frame_timeout: std::time::Duration,
    /// Permissions of the Unix socket file, in octal; 600 lets only this user connect.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_mode)]
    pub socket_mode: u32,
    /// Break a promise on purpose, to test a verifier: KIND[:RATE] with KIND one of drop,
    /// duplicate, reorder, corrupt, misroute, spoof, delay (rate per DELIVER, default 0.01).
    #[arg(long, value_name = "KIND[:RATE]", value_parser = Inject::parse)]
    pub inject: Option<Inject>,
    /// Readiness backend.
    #[arg(long, value_name = "NAME", default_value = "select", value_parser = clap::builder::PossibleValuesParser::new(backend::NAMES))]
    pub backend: String,
    /// Do not log connects, registrations, errors and disconnects.
    #[arg(long, short)]
    pub quiet: bool,
    /// After activity, keep polling before blocking: fewer wake-ups per message at low load,
    /// at the cost of a busy core. auto: for 50us, unless more than 4 tasks per core are
    /// runnable; DUR: that long, always; off: never.
    #[arg(long, value_name = "auto|off|DUR", default_value = "auto", value_parser = Spin::parse)]
    pub spin: Spin,
    /// TCP: close a connection whose peer stops answering for about this long (unacknowledged
    /// data, or keepalive probes while idle: TCP_USER_TIMEOUT and SO_KEEPALIVE), and drop what
    /// it held, instead of keeping a vanished client's buffers. Default: the kernel's (about 15
    /// minutes with data in flight, never when idle).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub peer_timeout: Option<std::time::Duration>,
}

/// Runs the relay until SIGINT or SIGTERM.
pub fn run(a: Args) -> i32 {
    let cfg = match config(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relay-sim relay: {e}");
            return exit::USAGE;
        }
    };
    let addr = match Addr::parse(&a.listen) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("relay-sim relay: --listen: {e}");
            return exit::USAGE;
        }
    };
    // select() caps us at FD_SETSIZE anyway; a higher limit lets the relay say RELAY_FULL
    // instead of failing accept() with EMFILE.
    let _ = sys::raise_nofile_limit();
    let listener = match Listener::bind_with_mode(&addr, a.socket_mode) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("relay-sim relay: {e}");
            return exit::ENV;
        }
    };
    warn_if_exposed(&addr);
    let stop = match stop_on_signals() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("relay-sim relay: cannot install signal handlers: {e}");
            return exit::ENV;
        }
    };
    match listener.local_addr() {
        Ok(bound) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {bound}");
            let _ = out.flush();
        }
        Err(e) => {
            eprintln!("relay-sim relay: cannot read the bound address: {e}");
            return exit::ENV;
        }
    }
    match relay::run(listener, Some(stop), cfg) {
        Ok(_) => exit::OK,
        Err(e) => {
            eprintln!("relay-sim relay: {e}");
            exit::FAIL
        }
    }
}

/// Says so when the relay can be reached, or its socket replaced, by more than this user.
fn warn_if_exposed(addr: &Addr) {
    match addr {
        Addr::Tcp(sa) if sa.ip().is_unspecified() => eprintln!(
            "relay-sim relay: warning: listening on all interfaces ({sa}): any host that can reach \
             this one may connect and take names; use 127.0.0.1 unless that is what you want"
        ),
        Addr::Tcp(sa) if !sa.ip().is_loopback() => {
            eprintln!("relay-sim relay: warning: listening on {sa}, which other hosts may reach")
        }
        Addr::Unix(path) => {
            use std::os::unix::fs::PermissionsExt;
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if let Ok(m) = std::fs::metadata(dir) {
                let mode = m.permissions().mode();
                if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                    eprintln!(
                        "relay-sim relay: warning: {} is writable by every user: another user could \
                         replace the socket; use a directory you own",
                        dir.display()
                    );
                }
            }
        }
        Addr::Tcp(_) => {}
    }
}

fn config(a: &Args) -> Result<Config, String> {
    let max_frame = parse_size(&a.max_frame).map_err(|e| format!("--max-frame: {e}"))?;
    let max_frame = u32::try_from(max_frame)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("--max-frame: {max_frame} is outside 1..=4294967295"))?;
    let max_buffer =
        super::parse_buffer(&a.max_buffer).map_err(|e| format!("--max-buffer: {e}"))?;
    if a.max_clients == 0 {
        return Err("--max-clients: must be at least 1".into());
    }
    if let Some(t) = a.peer_timeout {
        crate::relay::check_peer_timeout(t)?;
    }
    Ok(Config {
        max_frame,
        max_buffer,
        max_clients: a.max_clients,
        backend: a.backend.clone(),
        log: !a.quiet,
        hello_timeout: a.hello_timeout,
        frame_timeout: a.frame_timeout,
        inject: a.inject,
        spin: a.spin,
        trace: None,
        peer_timeout: a.peer_timeout,
    })
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|&m| m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not a file mode; use octal like 600 or 660"))
}

/// The self-pipe trick: SIGINT and SIGTERM write a byte to a socket pair whose other end
/// the relay watches like any client, so a signal wakes select() without a race.
fn stop_on_signals() -> std::io::Result<OwnedFd> {
    let (read_end, write_end) = UnixStream::pair()?;
    read_end.set_nonblocking(true)?;
    write_end.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(sig, write_end.try_clone()?)?;
    }
    Ok(read_end.into())
}
