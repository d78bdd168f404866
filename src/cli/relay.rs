//! `relay-sim relay`: the relay in the foreground.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use clap::Args as ClapArgs;

use super::{parse_size, EXIT_ENV, EXIT_FAIL, EXIT_OK, EXIT_USAGE};
use crate::protocol::DEFAULT_MAX_FRAME;
use crate::relay::{self, backend, Config};
use crate::sys::{self, Addr, Listener};

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
    /// Output buffered for one receiver before its senders are held back (bytes).
    #[arg(long, value_name = "BYTES", default_value = "1MiB")]
    pub max_buffer: String,
    /// Most connections at once; more are refused with RELAY_FULL.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_clients: usize,
    /// Readiness backend.
    #[arg(long, value_name = "NAME", default_value = "select", value_parser = clap::builder::PossibleValuesParser::new(backend::NAMES))]
    pub backend: String,
    /// Do not log connects, registrations, errors and disconnects.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs the relay until SIGINT or SIGTERM.
pub fn run(a: Args) -> i32 {
    let cfg = match config(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relay-sim relay: {e}");
            return EXIT_USAGE;
        }
    };
    let addr = match Addr::parse(&a.listen) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("relay-sim relay: --listen: {e}");
            return EXIT_USAGE;
        }
    };
    // select() caps us at FD_SETSIZE anyway; a higher limit lets the relay say RELAY_FULL
    // instead of failing accept() with EMFILE.
    let _ = sys::raise_nofile_limit();
    let listener = match Listener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("relay-sim relay: {e}");
            return EXIT_ENV;
        }
    };
    let stop = match stop_on_signals() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("relay-sim relay: cannot install signal handlers: {e}");
            return EXIT_ENV;
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
            return EXIT_ENV;
        }
    }
    match relay::run(listener, Some(stop), cfg) {
        Ok(_) => EXIT_OK,
        Err(e) => {
            eprintln!("relay-sim relay: {e}");
            EXIT_FAIL
        }
    }
}

fn config(a: &Args) -> Result<Config, String> {
    let max_frame = parse_size(&a.max_frame).map_err(|e| format!("--max-frame: {e}"))?;
    let max_frame = u32::try_from(max_frame)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("--max-frame: {max_frame} is outside 1..=4294967295"))?;
    let max_buffer = parse_size(&a.max_buffer).map_err(|e| format!("--max-buffer: {e}"))?;
    if a.max_clients == 0 {
        return Err("--max-clients: must be at least 1".into());
    }
    Ok(Config {
        max_frame,
        max_buffer: usize::try_from(max_buffer)
            .map_err(|_| "--max-buffer: too large".to_string())?,
        max_clients: a.max_clients,
        backend: a.backend.clone(),
        log: !a.quiet,
    })
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
