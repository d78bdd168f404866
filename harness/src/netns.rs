//! Network namespaces held by a process of the run (the first brick of `--hosts`): each is a
//! host with its own interfaces, addresses, routes and TCP stack. A namespace lives as long as
//! something holds it, so each is held by one small child process and nothing else (no
//! `/var/run/netns` entry, no bind mount): when the holder exits, or is killed with the run,
//! the namespace goes, and with it every interface in it (a veth pair goes when either end
//! does). Links are made with iproute2's `ip`, run inside a namespace by entering it between
//! fork and exec (`setns`), so nothing is added to or changed in the machine's own namespace.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, read, write, ForkResult, Pid};

/// A network namespace, held by a child process until this is dropped.
pub struct Netns {
    holder: Pid,
    /// The holder waits for end of file on this pipe: dropping it lets the holder go.
    release: Option<OwnedFd>,
    /// The namespace itself, open: what `setns` and `ip ... netns` are given.
    ns: std::fs::File,
}

impl Netns {
    /// A new, empty network namespace (only a loopback interface, down).
    ///
    /// # Safety
    /// Forks. The child only calls `unshare`, `write`, `read` and `_exit` (all async-signal-
    /// safe), so a multi-threaded caller is allowed; it must not rely on the child for more.
    pub unsafe fn new() -> io::Result<Netns> {
        let (ready_r, ready_w) = pipe()?;
        let (release_r, release_w) = pipe()?;
        // SAFETY: the child below calls only async-signal-safe functions and leaves with
        // _exit (fork safety: see this function's contract).
        match unsafe { fork() }? {
            ForkResult::Child => {
                let ok = unshare(CloneFlags::CLONE_NEWNET).is_ok();
                let _ = write(&ready_w, &[u8::from(ok)]);
                // Keep only the release pipe (as fd 3): a copy of any other process's pipe end
                // held here would keep that one from ever seeing end of file. (Raw calls
                // only: the parent may have threads.)
                // SAFETY: dup2 and close_range on this process's own table; async-signal-safe.
                unsafe {
                    nix::libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&release_r), 3);
                    nix::libc::syscall(nix::libc::SYS_close_range, 4u32, u32::MAX, 0u32);
                }
                // Hold the namespace until the parent's end closes (or this is killed).
                let mut b = [0u8; 1];
                // SAFETY: fd 3 is the release pipe's read end, kept above.
                while unsafe { nix::libc::read(3, b.as_mut_ptr().cast(), 1) } > 0 {}
                // SAFETY: ends the child at once, running nothing of the parent's.
                unsafe { nix::libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                drop(release_r);
                let mut b = [0u8; 1];
                let made = matches!(read(&ready_r, &mut b), Ok(1)) && b[0] == 1;
                let ns = if made {
                    std::fs::File::open(format!("/proc/{child}/ns/net"))
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "cannot make a network namespace (unshare CLONE_NEWNET): run as root, \
                         or inside a user namespace (unshare -r)",
                    ))
                };
                match ns {
                    Ok(ns) => Ok(Netns {
                        holder: child,
                        release: Some(release_w),
                        ns,
                    }),
                    Err(e) => {
                        drop(release_w); // the holder sees end of file and exits
                        let _ = waitpid(child, None);
                        Err(e)
                    }
                }
            }
        }
    }

    /// The holder's pid: what `ip link set DEV netns PID` takes.
    pub fn pid(&self) -> i32 {
        self.holder.as_raw()
    }

    /// The namespace's file under /proc (valid while this lives).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder))
    }

    /// Moves the calling thread into this namespace: sockets it makes from then on are this
    /// host's. (A thread's network namespace is its own; other threads are not moved.)
    pub fn enter(&self) -> io::Result<()> {
        setns(&self.ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
    }

    /// Runs `ip ARGS` inside this namespace; an error names the command and says what `ip`
    /// said.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        self.iproute2("ip", args)
    }

    /// Runs `tc ARGS` (iproute2's traffic control) inside this namespace.
    pub fn tc(&self, args: &[&str]) -> io::Result<()> {
        self.iproute2("tc", args)
    }

    fn iproute2(&self, program: &str, args: &[&str]) -> io::Result<()> {
        run(command_in(self.ns.try_clone()?, program, args), args)
    }
}

/// `PROGRAM ARGS`, to be run inside the network namespace `ns` (entered between fork and
/// exec).
fn command_in(ns: std::fs::File, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: setns is async-signal-safe; the child calls nothing else before exec.
    unsafe {
        cmd.pre_exec(move || setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
    }
    cmd
}

/// Moves the calling thread (in a new child: the process) into the network namespace at
/// `path` (a holder's `/proc/PID/ns/net`).
pub fn enter(path: &std::path::Path) -> io::Result<()> {
    let ns = std::fs::File::open(path)?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// The hosts of a run and the switch between them (`--hosts`): host 0 is the relay's, at
/// 198.18.0.1; hosts 1..=n are the clients', at 198.18.0.2 and up; each has one veth pair to a
/// bridge in the switch's namespace, and no route out (198.18.0.0/15 is set aside for
/// benchmarking networks, RFC 2544).
pub struct Network {
    /// The switch: holds the bridge and the hosts' far ends.
    switch: Netns,
    /// Each host's end on the switch (`rs{tag}s{k}`), by host.
    ends: Vec<String>,
    /// The relay's host, then the clients'.
    pub hosts: Vec<Netns>,
}

impl Network {
    /// Builds a relay host and `clients` client hosts on one switch, each link shaped by
    /// `shape` in both directions.
    ///
    /// # Safety
    /// Forks one holder per namespace (see [`Netns::new`]).
    pub unsafe fn build(client_hosts: usize, shape: &Shape) -> io::Result<Network> {
        if client_hosts == 0 || client_hosts > 250 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--hosts must be 1..=250 (one address each in 198.18.0.0/24)",
            ));
        }
        // SAFETY: as this function's contract.
        if shape.needs_netem() && !unsafe { has_netem() }? {
            return Err(io::Error::new(io::ErrorKind::Unsupported, NO_NETEM));
        }
        // SAFETY: as this function's contract.
        let switch = unsafe { Netns::new() }?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let tag = std::process::id() % 100_000;
        let mut hosts = Vec::with_capacity(client_hosts + 1);
        let mut ends = Vec::with_capacity(client_hosts + 1);
        for k in 0..=client_hosts {
            // SAFETY: as this function's contract.
            let host = unsafe { Netns::new() }?;
            let (h, w) = (format!("rs{tag}h{k}"), format!("rs{tag}s{k}"));
            // Made in the machine's namespace, and moved out at once: one end to the host,
            // the other to the switch.
            ip_here(&["link", "add", &h, "type", "veth", "peer", "name", &w])?;
            let moved = ip_here(&["link", "set", &h, "netns", &host.pid().to_string()])
                .and_then(|()| ip_here(&["link", "set", &w, "netns", &switch.pid().to_string()]));
            if let Err(e) = moved {
                let _ = ip_here(&["link", "del", &h]);
                let _ = ip_here(&["link", "del", &w]);
                return Err(e);
            }
            switch.ip(&["link", "set", &w, "master", "br0", "up"])?;
            host.ip(&["addr", "add", &format!("198.18.0.{}/15", k + 1), "dev", &h])?;
            host.ip(&["link", "set", &h, "up"])?;
            host.ip(&["link", "set", "lo", "up"])?;
            // Shaped where each direction leaves: the host's end (to the switch), the switch's
            // end (to the host).
            if let Some(qdisc) = shape.qdisc() {
                let q: Vec<&str> = qdisc.iter().map(String::as_str).collect();
                host.tc(&[&["qdisc", "add", "dev", &h, "root"], &q[..]].concat())?;
                switch.tc(&[&["qdisc", "add", "dev", &w, "root"], &q[..]].concat())?;
            }
            hosts.push(host);
            ends.push(w);
        }
        Ok(Network {
            switch,
            ends,
            hosts,
        })
    }

    /// The relay's address on its host.
    pub fn relay_ip(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(198, 18, 0, 1)
    }

    /// The namespace of client `i`'s host (round robin over the client hosts).
    pub fn client_host(&self, i: usize) -> PathBuf {
        let n = self.hosts.len() - 1;
        self.hosts[1 + i % n.max(1)].path()
    }

    /// What the nemesis needs to cut hosts off the switch and heal them (valid while this
    /// lives: the switch's namespace is named by its holder's pid).
    pub fn links(&self) -> Links {
        Links {
            switch: self.switch.path(),
            ends: self.ends.clone(),
            tcp_tables: self
                .hosts
                .iter()
                .map(|h| PathBuf::from(format!("/proc/{}/net/tcp", h.pid())))
                .collect(),
        }
    }
}

/// What `--link-delay` and `--link-loss` say where the kernel cannot do them.
pub const NO_NETEM: &str = "this kernel has no netem (the sch_netem qdisc, CONFIG_NET_SCH_NETEM), \
     which --link-delay and --link-loss need; --link-rate works without it (tbf), or run on a \
     kernel with netem (modprobe sch_netem)";

/// How each host's link to the switch is shaped, in both directions (`--link-rate`,
/// `--link-delay`, `--link-loss`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shape {
    /// Bits per second (tbf; netem's own rate when netem is in use).
    pub rate_bits: Option<u64>,
    /// Added to every packet (netem).
    pub delay: Option<std::time::Duration>,
    /// Percent of packets dropped (netem).
    pub loss_pct: Option<f64>,
}

impl Shape {
    /// Nothing is shaped.
    pub fn is_none(&self) -> bool {
        *self == Shape::default()
    }

    /// In words, for the report: `100 Mbit/s, delay 5ms, loss 1%`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = self.rate_bits {
            parts.push(format!("{} Mbit/s", r as f64 / 1e6));
        }
        if let Some(d) = self.delay {
            parts.push(format!("delay {d:?}"));
        }
        if let Some(l) = self.loss_pct {
            parts.push(format!("loss {l}%"));
        }
        parts.join(", ")
    }

    /// The flags that make it (for the replay command).
    pub fn flags(&self) -> String {
        let mut f = String::new();
        if let Some(r) = self.rate_bits {
            f.push_str(&format!(" --link-rate {r}bit"));
        }
        if let Some(d) = self.delay {
            f.push_str(&format!(" --link-delay {}us", d.as_micros()));
        }
        if let Some(l) = self.loss_pct {
            f.push_str(&format!(" --link-loss {l}"));
        }
        f
    }

    /// It needs the netem qdisc.
    pub fn needs_netem(&self) -> bool {
        self.delay.is_some() || self.loss_pct.is_some()
    }

    /// The root qdisc for one end of a link (`tc qdisc add dev DEV root` then these), if any:
    /// tbf for a rate alone, with a burst of 10 ms of it (at least ten full-size frames) and
    /// 100 ms of queue; netem for the rest.
    pub fn qdisc(&self) -> Option<Vec<String>> {
        if self.needs_netem() {
            let mut q = vec!["netem".to_string()];
            if let Some(d) = self.delay {
                q.extend(["delay".into(), format!("{}us", d.as_micros())]);
            }
            if let Some(l) = self.loss_pct {
                q.extend(["loss".into(), format!("{l}%")]);
            }
            if let Some(r) = self.rate_bits {
                q.extend(["rate".into(), format!("{r}bit")]);
            }
            return Some(q);
        }
        let r = self.rate_bits?;
        let burst = (r / 8 / 100).max(10 * 1514);
        Some(
            [
                "tbf".to_string(),
                "rate".into(),
                format!("{r}bit"),
                "burst".into(),
                burst.to_string(),
                "latency".into(),
                "100ms".into(),
            ]
            .to_vec(),
        )
    }
}

/// Parses a link rate as tc writes one: a number and `bit`, `kbit`, `mbit`, `gbit` (powers of
/// 1,000; `100mbit`), into bits per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let units = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)];
    let (num, mult) = units
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n, *m)))
        .ok_or_else(|| {
            format!("{s:?}: give a rate as tc does, a number and bit, kbit, mbit or gbit (100mbit)")
        })?;
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {num:?} is not a number (100mbit, 1.5gbit)"))?;
    let bits = v * mult;
    if !(8_000.0..=1e12).contains(&bits) {
        return Err(format!("{s:?}: must be from 8kbit to 1000gbit"));
    }
    Ok(bits as u64)
}

/// Whether this kernel has netem: tried on the loopback of a scratch namespace (made and gone
/// at once).
///
/// # Safety
/// Forks (see [`Netns::new`]).
pub unsafe fn has_netem() -> io::Result<bool> {
    // SAFETY: as this function's contract.
    let scratch = unsafe { Netns::new() }?;
    match scratch.tc(&["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]) {
        Ok(()) => Ok(true),
        Err(e) if is_no_netem(&e.to_string()) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One line of /proc/net/tcp: its retransmission timer is armed after a timeout.
fn resending(line: &str) -> bool {
    let f: Vec<&str> = line.split_whitespace().collect();
    let timer = f.get(5).and_then(|t| t.split(':').next());
    let retransmits = f.get(6).and_then(|r| u32::from_str_radix(r, 16).ok());
    timer == Some("01") && retransmits.is_some_and(|r| r > 0)
}

/// What `tc` says when the kernel (or tc) does not know netem.
fn is_no_netem(tc_said: &str) -> bool {
    tc_said.contains("qdisc kind is unknown") || tc_said.contains("Unknown qdisc")
}

/// The hosts' links to the switch, for partitions: host 0 is the relay's, hosts 1..=n the
/// clients' (client `i` on host `1 + i % n`). A host is cut off by setting its end on the
/// switch down: the host's own end then has no carrier, and whatever either side sends is
/// dropped (TCP retransmits it); setting it up again heals the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    switch: PathBuf,
    ends: Vec<String>,
    /// Each host's TCP table (`/proc/HOLDER/net/tcp`: a process's view is its namespace's).
    tcp_tables: Vec<PathBuf>,
}

impl Links {
    /// Client hosts (host 0, the relay's, not counted).
    pub fn client_hosts(&self) -> usize {
        self.ends.len().saturating_sub(1)
    }

    /// The host client `i` is on (1..=n).
    pub fn host_of(&self, i: usize) -> usize {
        1 + i % self.client_hosts().max(1)
    }

    /// The switch's end of host `k`'s link (the interface a partition sets down).
    pub fn end(&self, k: usize) -> &str {
        &self.ends[k]
    }

    /// Whether any TCP connection on the hosts is waiting to resend what the network dropped
    /// (its retransmission timer armed after at least one timeout: `tr` 1 and `retrnsmt` > 0
    /// in the host's /proc/net/tcp). While one is, silence is TCP's backoff, not a stall.
    pub fn retransmitting(&self) -> bool {
        self.tcp_tables.iter().any(|t| {
            std::fs::read_to_string(t).is_ok_and(|table| table.lines().skip(1).any(resending))
        })
    }

    /// Cuts host `k` off the switch (`up`: false) or heals it (`ip link set DEV down|up`, run
    /// in the switch's namespace).
    pub fn set(&self, k: usize, up: bool) -> io::Result<()> {
        let ns = std::fs::File::open(&self.switch)?;
        let args = ["link", "set", &self.ends[k], if up { "up" } else { "down" }];
        run(command_in(ns, "ip", &args), &args)
    }
}

/// Runs `ip ARGS` in the machine's own namespace (making a veth pair whose ends are then
/// moved away at once is the only use).
pub fn ip_here(args: &[&str]) -> io::Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run(cmd, args)
}

fn run(mut cmd: Command, args: &[&str]) -> io::Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    // Out of the terminal's process group: a Ctrl-C is the run's to handle (it ends the run
    // as interrupted), not a reason for a half-made link.
    cmd.process_group(0);
    let out = cmd.output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run `{program}`: {e}; install iproute2"),
        )
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // It holds nothing that needs a goodbye: killed, it takes the namespace with it.
        self.release = None;
        let _ = kill(self.holder, Signal::SIGKILL);
        let _ = waitpid(self.holder, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// For a test that makes links: root and iproute2 (None, said, without them), and a lock
    /// held while it runs (a cable's ends pass through the machine's namespace while a host
    /// is built, which another test's look at it would catch).
    fn links_test() -> Option<std::sync::MutexGuard<'static, ()>> {
        static LINKS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = LINKS.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: geteuid has no preconditions.
        if unsafe { nix::libc::geteuid() } != 0 || ip_here(&["-V"]).is_err() {
            eprintln!("skipped: needs root and iproute2");
            return None;
        }
        Some(guard)
    }

    /// `ip ARGS` inside the namespace at `path`, its output.
    fn ip_in(path: &std::path::Path, args: &[&str]) -> String {
        let ns = std::fs::File::open(path).unwrap();
        let out = command_in(ns, "ip", args).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    /// No traffic can leave a run's network: every host has only loopback and its one address
    /// in 198.18.0.0/15 (IPv6 link-local aside, which no router forwards), and no route but
    /// that network's; the switch has no address of its own.
    #[test]
    fn a_built_network_has_only_its_own_addresses_and_no_way_out() {
        let Some(_links) = links_test() else { return };
        let before = links_here();
        // SAFETY: the holders only unshare and wait (see Netns::new).
        let net = unsafe { Network::build(2, &Shape::default()) }.unwrap();
        assert_eq!(
            links_here(),
            before,
            "nothing stays in the machine's namespace"
        );
        for (k, host) in net.hosts.iter().enumerate() {
            let addrs: Vec<String> = ip_in(&host.path(), &["-o", "addr"])
                .lines()
                .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
                .filter(|a| !a.starts_with("fe80:"))
                .collect();
            assert_eq!(
                addrs,
                ["127.0.0.1/8", "::1/128", &format!("198.18.0.{}/15", k + 1)],
                "host {k}"
            );
            let routes = ip_in(&host.path(), &["-4", "route"]);
            assert_eq!(routes.lines().count(), 1, "host {k}: {routes}");
            assert!(
                routes.starts_with("198.18.0.0/15 dev "),
                "host {k}: {routes}"
            );
            assert!(ip_in(&host.path(), &["-6", "route"])
                .lines()
                .all(|r| !r.starts_with("default")));
        }
        let switch: Vec<String> = ip_in(&net.switch.path(), &["-o", "addr"])
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
            .filter(|a| !a.starts_with("fe80:"))
            .collect();
        assert!(switch.is_empty(), "the switch has addresses: {switch:?}");
        drop(net);
        assert_eq!(links_here(), before);
    }

    #[test]
    fn a_connection_resending_after_a_timeout_is_seen_in_the_tcp_table() {
        let head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        let idle = "   0: 010012C6:A3F1 020012C6:1F40 01 00000000:00000000 00:00000000 00000000     0        0 4242 1";
        let sent = "   1: 010012C6:A3F1 020012C6:1F40 01 00000040:00000000 01:0000002A 00000000     0        0 4243 1";
        let resend = "   2: 010012C6:A3F1 020012C6:1F40 01 00000040:00000000 01:00000150 00000002     0        0 4244 1";
        assert!(!resending(head) && !resending(idle));
        assert!(
            !resending(sent),
            "armed, but no timeout yet: nothing was lost"
        );
        assert!(resending(resend));
    }

    #[test]
    fn rates_read_as_tc_writes_them_and_shape_the_links() {
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(parse_rate("64kbit"), Ok(64_000));
        assert!(parse_rate("100mb")
            .unwrap_err()
            .contains("bit, kbit, mbit or gbit"));
        assert!(parse_rate("xmbit").unwrap_err().contains("not a number"));
        assert!(parse_rate("1bit").unwrap_err().contains("from 8kbit"));
        let rate = Shape {
            rate_bits: Some(100_000_000),
            ..Shape::default()
        };
        // 10 ms of 100 Mbit/s is 125,000 bytes of burst.
        assert_eq!(
            rate.qdisc().unwrap().join(" "),
            "tbf rate 100000000bit burst 125000 latency 100ms"
        );
        assert_eq!(rate.flags(), " --link-rate 100000000bit");
        let netem = Shape {
            delay: Some(std::time::Duration::from_millis(5)),
            loss_pct: Some(1.0),
            ..rate
        };
        assert!(netem.needs_netem());
        assert_eq!(
            netem.qdisc().unwrap().join(" "),
            "netem delay 5000us loss 1% rate 100000000bit"
        );
        assert_eq!(netem.describe(), "100 Mbit/s, delay 5ms, loss 1%");
        assert!(Shape::default().qdisc().is_none());
        assert!(is_no_netem("Error: Specified qdisc kind is unknown."));
    }

    fn links_here() -> Vec<String> {
        let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| Some(l.split(": ").nth(1)?.split('@').next()?.to_string()))
            .collect()
    }

    /// Two hosts and a switch, as `--hosts` will build them: a bridge in the switch, a veth pair
    /// from each host to it, addresses from 198.18.0.0/15. A TCP connection crosses from one
    /// host to the other; then everything goes with the holders, and the machine's own
    /// namespace has the interfaces it had. (Needs root: skipped otherwise.)
    #[test]
    fn two_hosts_on_a_switch_talk_and_leave_nothing_behind() {
        let Some(_links) = links_test() else { return };
        let before = links_here();
        let tag = std::process::id() % 100_000;
        let holders = {
            // SAFETY: each holder child only unshares, signals and waits (see Netns::new).
            let (switch, a, b) = unsafe { (Netns::new(), Netns::new(), Netns::new()) };
            (switch.unwrap(), a.unwrap(), b.unwrap())
        };
        let (switch, a, b) = (&holders.0, &holders.1, &holders.2);
        switch
            .ip(&["link", "add", "br0", "type", "bridge"])
            .unwrap();
        switch.ip(&["link", "set", "br0", "up"]).unwrap();
        for (k, (host, addr)) in [(a, "198.18.0.1/15"), (b, "198.18.0.2/15")]
            .iter()
            .enumerate()
        {
            let (h, s) = (format!("h{tag}x{k}"), format!("s{tag}x{k}"));
            // Made here, moved out at once: one end to the host, one to the switch.
            ip_here(&["link", "add", &h, "type", "veth", "peer", "name", &s]).unwrap();
            ip_here(&["link", "set", &h, "netns", &host.pid().to_string()]).unwrap();
            ip_here(&["link", "set", &s, "netns", &switch.pid().to_string()]).unwrap();
            switch
                .ip(&["link", "set", &s, "master", "br0", "up"])
                .unwrap();
            host.ip(&["addr", "add", addr, "dev", &h]).unwrap();
            host.ip(&["link", "set", &h, "up"]).unwrap();
            host.ip(&["link", "set", "lo", "up"]).unwrap();
        }
        assert_eq!(
            links_here(),
            before,
            "nothing stays in the machine's namespace"
        );
        let (a_path, b_path) = (a.path(), b.path());
        // A thread enters host a and listens; another enters host b and connects once the
        // first says it listens.
        let (listening, is_listening) = std::sync::mpsc::channel();
        let server = std::thread::spawn({
            let ns = std::fs::File::open(&a_path).unwrap();
            move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                let l = std::net::TcpListener::bind("198.18.0.1:7000").unwrap();
                listening.send(()).unwrap();
                let (mut s, peer) = l.accept().unwrap();
                let mut b = [0u8; 5];
                s.read_exact(&mut b).unwrap();
                s.write_all(&b).unwrap();
                peer
            }
        });
        let client = std::thread::spawn(move || {
            let ns = std::fs::File::open(&b_path).unwrap();
            setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
            is_listening.recv().unwrap();
            let mut s = std::net::TcpStream::connect("198.18.0.1:7000")
                .unwrap_or_else(|e| panic!("connect across the switch: {e}"));
            s.write_all(b"hello").unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            b
        });
        assert_eq!(&client.join().unwrap(), b"hello");
        let peer = server.join().unwrap();
        assert_eq!(peer.ip().to_string(), "198.18.0.2", "it came from host b");
        let pids: Vec<i32> = [a, b, switch].iter().map(|n| n.pid()).collect();
        drop(holders);
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "holder {pid} reaped"
            );
        }
        assert_eq!(
            links_here(),
            before,
            "the machine's interfaces are as they were"
        );
    }
}
