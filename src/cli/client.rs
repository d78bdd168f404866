//! `relay-sim client`: an interactive client. Lines `DST text` on stdin go to DST;
//! deliveries print as `SRC: text`.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use clap::Args as ClapArgs;
use nix::poll::{poll, PollFd, PollFlags};

use crate::client::{code_name, Client, ClientError};
use crate::protocol::{is_valid_name, RelayFrame};
use crate::sys::poll_timeout;
use crate::sys::Addr;
use relay_harness::exit;

/// Flags of `relay-sim client`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The relay's address: a Unix socket path or HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "relay-sim.sock")]
    pub connect: String,
    /// The name to register (1 to 32 of A-Z a-z 0-9 _ . -).
    #[arg(long, value_name = "NAME")]
    pub name: String,
}

/// Runs until stdin ends (exit 0) or the relay closes or refuses us (exit 1).
pub fn run(a: Args) -> i32 {
    if !is_valid_name(a.name.as_bytes()) {
        eprintln!(
            "relay-sim client: --name {:?}: a name is 1 to 32 of A-Z a-z 0-9 _ . -",
            a.name
        );
        return exit::USAGE;
    }
    let addr = match Addr::parse(&a.connect) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("relay-sim client: --connect: {e}");
            return exit::USAGE;
        }
    };
    let mut client = match Client::connect(&addr, &a.name) {
        Ok(c) => c,
        Err(ClientError::Io(e)) => {
            eprintln!(
                "relay-sim client: cannot connect to {addr}: {e}; is a relay running? (relay-sim relay --listen {})",
                a.connect
            );
            return exit::ENV;
        }
        Err(e) => {
            eprintln!("relay-sim client: {} was not registered: {e}", a.name);
            return exit::FAIL;
        }
    };
    eprintln!(
        "registered as {}; type `DST text` to send, Ctrl-D to quit",
        a.name
    );
    match interact(&mut client) {
        Ok(()) => exit::OK,
        Err(e) => {
            println!("! {e}");
            exit::FAIL
        }
    }
}

/// The poll loop over stdin and the relay socket.
fn interact(client: &mut Client) -> Result<(), ClientError> {
    let stdin = io::stdin();
    let mut line_buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stdin_open = true;
    let mut fatal: Option<ClientError> = None;
    while stdin_open {
        let (stdin_ready, sock_ready) = {
            let mut sock_flags = PollFlags::POLLIN;
            if client.pending() > 0 {
                sock_flags |= PollFlags::POLLOUT;
            }
            let mut fds = [
                PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                PollFd::new(client.as_fd(), sock_flags),
            ];
            match poll(&mut fds, poll_timeout(None)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if sock_ready {
            let open = client.pump(Some(Duration::ZERO), |f| {
                if let Some(e) = show(f) {
                    fatal.get_or_insert(e);
                }
            })?;
            if let Some(e) = fatal.take() {
                return Err(e);
            }
            if !open {
                return Err(ClientError::Closed);
            }
        }
        if stdin_ready {
            let n = match nix::unistd::read(stdin.as_fd(), &mut chunk) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            };
            if n == 0 {
                stdin_open = false;
                if !line_buf.is_empty() {
                    line_buf.push(b'\n');
                }
            }
            line_buf.extend_from_slice(&chunk[..n]);
            while let Some(pos) = line_buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = line_buf.drain(..=pos).collect();
                queue_line(client, &line[..pos]);
            }
            client.write_some()?;
        }
    }
    // stdin is done: deliver what is queued, then leave (what the relay still sends us, such
    // as a BOUNCE for the last line, is shown).
    client.leave(Some(Duration::from_secs(10)), |f| {
        let _ = show(f);
    })
}

/// `DST text...` -> SEND. A line that cannot be one (no text after DST, or a DST that is not
/// a valid name) is not sent: the person is told why on stderr and nothing goes to the relay.
fn queue_line(client: &mut Client, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    let text = text.trim_start();
    if text.is_empty() {
        return;
    }
    match parse_line(text) {
        Ok((dst, msg)) => client.queue(dst, msg.as_bytes()),
        Err(why) => eprintln!("! not sent: {why}"),
    }
}

/// A typed line as (DST, text), or why it cannot be sent.
fn parse_line(text: &str) -> Result<(&str, &str), String> {
    let (dst, msg) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    if let Err(v) = crate::protocol::check_name(dst.as_bytes()) {
        return Err(format!(
            "{dst:?} is not a name a client can hold: {}",
            v.text
        ));
    }
    if msg.trim().is_empty() {
        return Err(format!("no text after {dst}: type `{dst} your message`"));
    }
    Ok((dst, msg))
}
/// Prints one frame from the relay; returns the error that ends the session, if any.
fn show(f: RelayFrame<'_>) -> Option<ClientError> {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = io::stdout().lock();
    let _ = match f {
        RelayFrame::Deliver { src, payload } => writeln!(out, "{}: {}", s(src), s(payload)),
        RelayFrame::Bounce { dst, payload } => {
            writeln!(
                out,
                "! bounced: no client named {} (message: {})",
                s(dst),
                s(payload)
            )
        }
        RelayFrame::Welcome(n) => writeln!(out, "! unexpected WELCOME {}", s(n)),
        RelayFrame::Error { code, text } => {
            return Some(ClientError::Refused {
                code,
                text: s(text),
            })
        }
    };
    let _ = out.flush();
    let _ = code_name;
    None
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn a_typed_line_is_a_name_and_some_text_or_it_is_not_sent() {
        assert_eq!(parse_line("ClientB 1"), Ok(("ClientB", "1")));
        assert_eq!(
            parse_line("ClientB two words"),
            Ok(("ClientB", "two words"))
        );
        let e = parse_line("bad!name x").unwrap_err();
        assert!(e.contains("\"bad!name\" is not a name"), "{e}");
        let e = parse_line("ClientB").unwrap_err();
        assert!(e.contains("no text after ClientB"), "{e}");
        assert!(parse_line("ClientB   ").is_err());
    }
}
