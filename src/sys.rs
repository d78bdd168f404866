//! Small socket verbs (in the spirit of Redis's anet.c): addresses, listen, connect, accept.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A non-blocking call found nothing to do yet (EAGAIN) or was interrupted (EINTR): try
/// again when the socket is next ready.
pub fn retry_later(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Where a relay listens or a client connects: a Unix socket path or a TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A Unix stream socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl Addr {
    /// Parses `unix:PATH`, `tcp:HOST:PORT`, `HOST:PORT` (TCP) or a bare path (Unix).
    pub fn parse(s: &str) -> Result<Addr, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Addr::Unix(PathBuf::from(p)));
        }
        let tcp = s.strip_prefix("tcp:");
        let hostport = tcp.unwrap_or(s);
        if let Ok(sa) = hostport.parse::<SocketAddr>() {
            return Ok(Addr::Tcp(sa));
        }
        if tcp.is_some() || (!s.contains('/') && s.contains(':')) {
            return hostport
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .map(Addr::Tcp)
                .ok_or_else(|| {
                    format!(
                        "cannot resolve TCP address {hostport:?}; use HOST:PORT, e.g. 127.0.0.1:0"
                    )
                });
        }
        if s.is_empty() {
            return Err("empty address; give a socket path or HOST:PORT".into());
        }
        Ok(Addr::Unix(PathBuf::from(s)))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// A listening socket of either family, non-blocking.
#[derive(Debug)]
pub struct Listener {
    kind: ListenerKind,
    /// Remove the Unix socket file on drop.
    unlink: bool,
}

#[derive(Debug)]
enum ListenerKind {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// Why a relay could not listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A live relay already accepts connections on this path.
    #[error(
        "{0}: a live relay is already listening there; stop it or choose another --listen path"
    )]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0}: exists and is not a socket; remove it or choose another --listen path")]
    NotASocket(PathBuf),
    /// Any other failure, with the address it concerns.
    #[error("cannot listen on {addr}: {source}")]
    Io {
        /// The address.
        addr: Addr,
        /// The cause.
        source: io::Error,
    },
}

impl Listener {
    /// Binds and listens, a Unix socket file with mode 0600 (only this user may connect).
    /// A Unix path that a live relay answers on is refused; a stale socket file (nobody
    /// answers) is replaced.
    pub fn bind(addr: &Addr) -> Result<Listener, ListenError> {
        Listener::bind_with_mode(addr, 0o600)
    }

    /// As [`Listener::bind`], with the Unix socket file's permissions given.
    pub fn bind_with_mode(addr: &Addr, mode: u32) -> Result<Listener, ListenError> {
        let io_err = |source| ListenError::Io {
            addr: addr.clone(),
            source,
        };
        let l = match addr {
            Addr::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(ListenError::NotASocket(path.clone()));
                    }
                    match UnixStream::connect(path) {
                        Ok(_) => return Err(ListenError::InUse(path.clone())),
                        // Nobody listens: a socket file left by a relay that died. Replace it.
                        Err(_) => std::fs::remove_file(path).map_err(io_err)?,
                    }
                }
                // The umask narrows the file from its birth (no window in which others could
                // connect); the chmod then sets exactly the mode asked for.
                use nix::sys::stat::{umask, Mode};
                let old = umask(Mode::from_bits_truncate(!mode & 0o777));
                let bound = UnixListener::bind(path);
                umask(old);
                let l = bound.map_err(io_err)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(io_err)?;
                l.set_nonblocking(true).map_err(io_err)?;
                ListenerKind::Unix(l, path.clone())
            }
            Addr::Tcp(sa) => {
                let l = TcpListener::bind(sa).map_err(io_err)?;
                l.set_nonblocking(true).map_err(io_err)?;
                ListenerKind::Tcp(l)
            }
        };
        let listener = Listener {
            kind: l,
            unlink: true,
        };
        // std listens with a backlog of 128. Thousands of clients connecting at once would
        // overflow it, and on TCP an overflowed queue drops SYNs, which cost the client a
        // retransmit (a second or more). Listening again raises the queue to the system's cap.
        let _ = nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXALLOWABLE);
        Ok(listener)
    }

    /// Leaves the socket file in place on drop (when something else removes its directory,
    /// or a forked copy must not remove the file the relay still uses).
    pub fn keep_file(&mut self) {
        self.unlink = false;
    }

    /// The bound address (with the kernel's port for `:0`).
    pub fn local_addr(&self) -> io::Result<Addr> {
        Ok(match &self.kind {
            ListenerKind::Unix(_, p) => Addr::Unix(p.clone()),
            ListenerKind::Tcp(l) => Addr::Tcp(l.local_addr()?),
        })
    }

    /// Accepts one connection (non-blocking; `WouldBlock` when none wait). The new socket is
    /// non-blocking, close-on-exec (std sets it), and for TCP has Nagle off.
    pub fn accept(&self) -> io::Result<Stream> {
        loop {
            let r = match &self.kind {
                ListenerKind::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
                ListenerKind::Tcp(l) => l.accept().map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                }),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(s) => {
                    s.set_nonblocking(true)?;
                    return Ok(s);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The socket file to remove when the relay stops, if any.
    pub fn path(&self) -> Option<&Path> {
        match &self.kind {
            ListenerKind::Unix(_, p) => Some(p),
            ListenerKind::Tcp(_) => None,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (ListenerKind::Unix(_, p), true) = (&self.kind, self.unlink) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            ListenerKind::Unix(l, _) => l.as_fd(),
            ListenerKind::Tcp(l) => l.as_fd(),
        }
    }
}

/// A connected stream socket of either family.
#[derive(Debug)]
pub enum Stream {
    /// Unix stream socket.
    Unix(UnixStream),
    /// TCP stream.
    Tcp(TcpStream),
}

impl Stream {
    /// Connects (blocking). TCP gets Nagle off: frames are batched by the writer, not the kernel.
    pub fn connect(addr: &Addr) -> io::Result<Stream> {
        Ok(match addr {
            Addr::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
            Addr::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
        })
    }

    /// TCP: gives up on a peer that stops answering within about `t` (`--peer-timeout`), so a
    /// relay does not hold a vanished client's buffers forever. Data unacknowledged for `t`
    /// ends the connection (TCP_USER_TIMEOUT); an idle one is probed (keepalive: first after
    /// `t`/2, then every `t`/6, at least a second each), and the same timeout ends it when the
    /// probes go unanswered. Unix sockets have no peer to lose: nothing to do.
    pub fn set_peer_timeout(&self, t: std::time::Duration) -> io::Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        let Stream::Tcp(s) = self else {
            return Ok(());
        };
        let secs = |d: std::time::Duration| d.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        let ms = t.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        setsockopt(s, sockopt::TcpUserTimeout, &ms)?;
        setsockopt(s, sockopt::KeepAlive, &true)?;
        setsockopt(s, sockopt::TcpKeepIdle, &secs(t / 2))?;
        setsockopt(s, sockopt::TcpKeepInterval, &secs(t / 6))?;
        setsockopt(s, sockopt::TcpKeepCount, &3)?;
        Ok(())
    }

    /// Switches O_NONBLOCK.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(on),
            Stream::Tcp(s) => s.set_nonblocking(on),
        }
    }

    /// Sets a read timeout for blocking reads (None waits forever).
    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    /// Sets a write timeout for blocking writes (None waits forever).
    pub fn set_write_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    /// A second handle to the same socket.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Raises the soft open-files limit to the hard limit, so a relay can hold more clients
/// than the usual soft default of 1024. Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// Retries an operation that failed with `EINTR`.
pub fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// A poll timeout in whole milliseconds, rounded up so a short wait never spins.
pub fn poll_timeout(timeout: Option<std::time::Duration>) -> nix::poll::PollTimeout {
    use nix::poll::PollTimeout;
    match timeout {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.as_micros().div_ceil(1000);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            Addr::parse("/tmp/r.sock").unwrap(),
            Addr::Unix("/tmp/r.sock".into())
        );
        assert_eq!(Addr::parse("r.sock").unwrap(), Addr::Unix("r.sock".into()));
        assert_eq!(Addr::parse("unix:a:b").unwrap(), Addr::Unix("a:b".into()));
        assert_eq!(
            Addr::parse("127.0.0.1:0").unwrap(),
            Addr::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            Addr::parse("tcp:127.0.0.1:9").unwrap(),
            Addr::Tcp("127.0.0.1:9".parse().unwrap())
        );
        assert!(Addr::parse("").is_err());
    }

    /// --peer-timeout: the options a TCP connection gets, read back from the kernel; a Unix
    /// socket is left alone.
    #[test]
    fn a_peer_timeout_sets_the_user_timeout_and_keepalive_on_tcp_only() {
        use nix::sys::socket::{getsockopt, sockopt};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = Stream::connect(&Addr::Tcp(l.local_addr().unwrap())).unwrap();
        c.set_peer_timeout(std::time::Duration::from_secs(12))
            .unwrap();
        let Stream::Tcp(s) = &c else { unreachable!() };
        assert_eq!(getsockopt(s, sockopt::TcpUserTimeout).unwrap(), 12_000);
        assert!(getsockopt(s, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(s, sockopt::TcpKeepIdle).unwrap(), 6);
        assert_eq!(getsockopt(s, sockopt::TcpKeepInterval).unwrap(), 2);
        assert_eq!(getsockopt(s, sockopt::TcpKeepCount).unwrap(), 3);
        c.set_peer_timeout(std::time::Duration::from_millis(300))
            .unwrap();
        assert_eq!(getsockopt(s, sockopt::TcpUserTimeout).unwrap(), 300);
        assert_eq!(
            getsockopt(s, sockopt::TcpKeepIdle).unwrap(),
            1,
            "at least a second"
        );
        let (u, _) = UnixStream::pair().unwrap();
        Stream::Unix(u)
            .set_peer_timeout(std::time::Duration::from_secs(1))
            .unwrap();
    }
}
