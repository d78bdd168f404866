//! A run, fully described: what `relay-sim run` builds from its flags and a Rust program can
//! build itself. It is checked once ([`RunSpec::check`]), and everything else derives from it:
//! the plans each client follows, the deadline, the replay command and the report's config.

use std::path::PathBuf;
use std::time::Duration;

use relay_harness::blackbox;
use relay_harness::exit;
use relay_harness::payload::{self, PayloadSize, Sizes};
use relay_harness::plan::{script_plans, Plans};
use relay_harness::report::RunConfig;
use relay_harness::scenario::{client_name, Scenario};
use relay_harness::script::{FaultLine, Script};
use relay_harness::supervisor::Action;

use crate::protocol::DEFAULT_MAX_FRAME;
use crate::relay::inject::Inject;
use crate::relay::{self, Spin};

/// How clients reach the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// A Unix socket in a fresh temporary directory.
    Unix,
    /// TCP on 127.0.0.1, on a port the kernel picks.
    Tcp,
}

/// The built-in relay's readiness backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// select(2): FD_SETSIZE caps it at fd 1023.
    Select,
    /// poll(2).
    Poll,
    /// epoll(7).
    Epoll,
}

/// Who sends what to whom in a random run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Each client sends --msgs to random others, as fast as it can.
    Mesh,
    /// Clients in pairs c0-c1, c2-c3, ..., one message in flight per pair, --msgs round
    /// trips; latency is then the round trip.
    #[value(name = "pingpong")]
    PingPong,
}

relay_harness::words!(Transport { Unix => "unix", Tcp => "tcp" });
relay_harness::words!(Backend { Select => "select", Poll => "poll", Epoll => "epoll" });
relay_harness::words!(Pattern { Mesh => "mesh", PingPong => "pingpong" });

/// How much a random run's clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// This many messages each.
    Msgs(u64),
    /// For this long (a soak); end markers then account for every message.
    For(Duration),
}

impl Amount {
    /// Messages each client sends: the count, or `when_timed` for a soak (no count).
    fn each(self, when_timed: u64) -> u64 {
        match self {
            Amount::Msgs(m) => m,
            Amount::For(_) => when_timed,
        }
    }
}

/// What the clients send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traffic {
    /// Seeded random traffic.
    Random {
        /// Client processes, named c0..c{N-1}.
        clients: usize,
        /// How much each sends.
        amount: Amount,
        /// Payload sizes.
        payload: PayloadSize,
        /// Mesh or ping-pong.
        pattern: Pattern,
    },
    /// A scenario script (docs/scenarios.md).
    Script {
        /// Where it came from (shown in messages and the replay command).
        path: PathBuf,
        /// The script.
        script: Script,
    },
}

/// The nemesis: every `interval`, one of `kinds` strikes a client or the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NemesisSpec {
    /// Stop, Kill, Restart, Relay.
    pub kinds: Vec<Action>,
    /// Time between two actions.
    pub interval: Duration,
    /// How long a stop, a death before a restart, or a partition lasts (None: half the
    /// interval).
    pub lasting: Option<Duration>,
}

/// One run of relay-sim, fully described.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// What the clients send.
    pub traffic: Traffic,
    /// The seed destinations, sizes, payloads and faults are drawn from.
    pub seed: u64,
    /// How clients reach the relay.
    pub transport: Transport,
    /// The built-in relay's backend.
    pub backend: Backend,
    /// The built-in relay's busy-polling.
    pub relay_spin: Spin,
    /// The built-in relay's output bound per receiver (None: its default).
    pub max_buffer: Option<usize>,
    /// The built-in relay's dead-peer bound over TCP (`relay --peer-timeout`; None: the
    /// kernel's).
    pub peer_timeout: Option<Duration>,
    /// A promise the built-in relay breaks on purpose.
    pub inject: Option<Inject>,
    /// Another relay program, `sh -c CMD` with `{addr}` replaced (None: the built-in relay).
    pub relay_cmd: Option<String>,
    /// A relay already running, on this machine or another (`--relay-addr`): the run starts
    /// none, and its clients connect here.
    pub relay_addr: Option<crate::sys::Addr>,
    /// `--hosts N`: the relay on a host of its own and the clients spread over N client hosts,
    /// each a network namespace, over TCP across a virtual switch.
    pub hosts: Option<usize>,
    /// `--link-rate`, `--link-delay`, `--link-loss`: how each host's link is shaped.
    pub links: relay_harness::netns::Shape,
    /// The deadline (None: one that scales with the work, see [`RunSpec::deadline`]).
    pub timeout: Option<Duration>,
    /// The quiet rule's period (None: off).
    pub quiet: Option<Duration>,
    /// Clients cap each write() at a seeded size in this range.
    pub write_chunks: Option<PayloadSize>,
    /// Process faults during the run.
    pub nemesis: Option<NemesisSpec>,
    /// Record what every process does.
    pub trace: bool,
}

/// Why a run could not be made or started: what to tell the person, and the exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RunError {
    /// The exit code it means (relay_harness::exit).
    pub code: i32,
    /// One line saying what is wrong and what to do.
    pub message: String,
}

impl RunError {
    /// The command line or the script is wrong (exit 2).
    pub fn usage(message: impl Into<String>) -> RunError {
        RunError {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    /// The machine refused something the run needs (exit 3).
    pub fn env(message: impl Into<String>) -> RunError {
        RunError {
            code: exit::ENV,
            message: message.into(),
        }
    }
}

/// Longest client name (`c` and up to 5 digits) plus the SEND overhead must fit a frame.
pub const MAX_PAYLOAD: usize = DEFAULT_MAX_FRAME as usize - 2 - 32;
/// Clients a select() relay can hold next to its own fds, below FD_SETSIZE.
const MAX_CLIENTS_SELECT: usize = 1000;
/// A pessimistic rate for a soak's end markers, for its deadline (a loaded 2-core machine
/// moves about a million a second).
const MARKERS_PER_S: f64 = 200_000.0;
/// Client names are `c` and up to five digits.
const MAX_CLIENTS_NAMES: usize = 99_999;
/// Descriptors the relay and the supervisor need besides one per client (listener, pipes,
/// epoll, stdio, the janitor's).
const FD_RESERVE: u64 = 64;
/// Processes left for everything else: the relay, the janitor, a shell's.
const PROC_RESERVE: u64 = 256;

/// The most clients this machine lets a run have with poll or epoll, and the limit that sets
/// it, worded with how to raise it. Each client is a socket in the relay and a pipe in the
/// supervisor (the open-file limit, whose soft value a run raises to the hard one:
/// `raise_fd_limit`), and a process of the same user (the process limit, and the kernel's
/// pid_max).
pub fn machine_cap() -> (usize, String) {
    use nix::sys::resource::{getrlimit, Resource};
    use relay_harness::plots::group;
    let hard_fds = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard);
    let mut cap = (
        hard_fds.saturating_sub(FD_RESERVE),
        format!(
            "the open-file limit is {} (each client is a socket in the relay and a pipe in the \
             supervisor); raise the hard limit (ulimit -Hn as root, or /etc/security/limits.conf)",
            group(hard_fds)
        ),
    );
    let root = nix::unistd::geteuid().is_root();
    if let (Ok((procs, _)), false) = (getrlimit(Resource::RLIMIT_NPROC), root) {
        if procs.saturating_sub(PROC_RESERVE) < cap.0 {
            cap = (
                procs.saturating_sub(PROC_RESERVE),
                format!(
                    "the process limit is {} for this user, and each client is a process; \
                     raise it with ulimit -u",
                    group(procs)
                ),
            );
        }
    }
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(32_768);
    if pid_max.saturating_sub(PROC_RESERVE * 4) < cap.0 {
        cap = (
            pid_max.saturating_sub(PROC_RESERVE * 4),
            format!(
                "the kernel's pid_max is {} (each client is a process); raise \
                 /proc/sys/kernel/pid_max as root",
                group(pid_max)
            ),
        );
    }
    let clients = usize::try_from(cap.0).unwrap_or(usize::MAX);
    if clients >= MAX_CLIENTS_NAMES {
        return (
            MAX_CLIENTS_NAMES,
            "client names have at most five digits".into(),
        );
    }
    (clients, cap.1)
}

/// Raises this process's soft open-file limit to its hard one (children inherit it), as a
/// server that holds a socket per client does: the default soft limit (often 1,024) is a
/// guard for programs that do not expect many files, not a limit of the machine.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

impl Backend {
    /// The most clients a relay on this backend is given, and why no more.
    pub fn max_clients(self) -> (usize, String) {
        let (machine, why) = machine_cap();
        match self {
            Backend::Select if MAX_CLIENTS_SELECT <= machine => (
                MAX_CLIENTS_SELECT,
                "select() cannot watch fds past 1023 (FD_SETSIZE); --backend poll or epoll can"
                    .into(),
            ),
            _ => (machine, why),
        }
    }
}

/// A duration that reads back as itself on the command line (one word, shell-safe).
pub fn duration_flag(t: Duration) -> String {
    if t.subsec_millis() == 0 && t.subsec_nanos() == 0 {
        format!("{}s", t.as_secs())
    } else {
        format!("{}ms", t.as_millis().max(1))
    }
}

impl RunSpec {
    /// The number of client processes.
    pub fn clients(&self) -> usize {
        match &self.traffic {
            Traffic::Random { clients, .. } => *clients,
            Traffic::Script { script, .. } => script.clients,
        }
    }

    /// `--duration`: how long the clients send, if that is how the run is measured.
    pub fn sending_for(&self) -> Option<Duration> {
        match &self.traffic {
            Traffic::Random {
                amount: Amount::For(d),
                ..
            } => Some(*d),
            _ => None,
        }
    }

    /// Most ordered pairs of clients that can carry traffic: what the shared counters make
    /// room for. A count bounds them (each client sends to at most `--msgs` others); a
    /// `--duration` cannot, so it has room for every pair (up to
    /// [`blackbox::DURATION_CLIENTS`] clients).
    pub fn traffic_pairs(&self) -> usize {
        let n = self.clients();
        match &self.traffic {
            Traffic::Random {
                amount: Amount::Msgs(m),
                ..
            } => n.saturating_mul(usize::try_from(*m).unwrap_or(usize::MAX).min(n)),
            _ => n.saturating_mul(n),
        }
    }

    /// A nemesis that kills clients (or cuts them off for longer than the relay keeps a
    /// silent peer): the run ends with a drain of end markers.
    pub fn has_deaths(&self) -> bool {
        self.long_partitions()
            || self.nemesis.as_ref().is_some_and(|n| {
                n.kinds
                    .iter()
                    .any(|k| matches!(k, Action::Kill | Action::Restart))
            })
    }

    /// How long each nemesis fault lasts.
    pub fn nemesis_lasting(&self) -> Option<Duration> {
        self.nemesis
            .as_ref()
            .map(|n| n.lasting.unwrap_or(n.interval / 2))
    }

    /// Partitions that outlast the relay's dead-peer bound (see [`surely_closed`]): the relay
    /// ends the cut-off clients' connections, so the run plays them as clients that lost their
    /// connection (see `Nemesis::long_partitions`).
    pub fn long_partitions(&self) -> bool {
        let partitions = self
            .nemesis
            .as_ref()
            .is_some_and(|n| n.kinds.iter().any(|k| k.is_partition()));
        match (self.peer_timeout, self.nemesis_lasting()) {
            (Some(p), Some(l)) => partitions && l >= surely_closed(p),
            _ => false,
        }
    }

    /// Why faults this long cannot give a verdict, if they cannot: one that outlasts half the
    /// deadline (the nemesis acts in the first half) ends the run before it is over; and with
    /// a dead-peer bound P, a stop of P/2 or more can end the stopped client's connection (a
    /// full receive window held that long aborts it, on Linux 5.11 and later), as can a
    /// script's `stop` without a duration.
    fn lasting_refused(&self) -> Option<String> {
        if let (Some(l), Some(t), Some(n)) = (self.nemesis_lasting(), self.timeout, &self.nemesis) {
            if n.lasting.is_some() && l >= t / 2 {
                return Some(format!(
                    "--nemesis-for {}: the nemesis acts in the first half of --timeout {}, and a \
                     fault this long would outlast the run; give --timeout of at least {}",
                    duration_flag(l),
                    duration_flag(t),
                    duration_flag(l * 2 + Duration::from_secs(10))
                ));
            }
        }
        let stops = self
            .nemesis
            .as_ref()
            .is_some_and(|n| n.kinds.contains(&Action::Stop));
        // A client stopped mid-write leaves the relay half a frame; the relay ends a
        // connection whose frame stays incomplete for its frame timeout.
        let frame = relay::Config::default().frame_timeout;
        let builtin = self.relay_cmd.is_none() && self.relay_addr.is_none();
        if stops
            && builtin
            && self
                .nemesis_lasting()
                .is_some_and(|l| l + Duration::from_secs(1) >= frame)
        {
            return Some(format!(
                "--nemesis stop: a client stopped for {} may be stopped in the middle of a frame, \
                 and the built-in relay ends a connection whose frame stays incomplete for {} (its \
                 frame timeout); make stops shorter than {} (--nemesis-for, by default half \
                 --nemesis-interval)",
                duration_flag(self.nemesis_lasting().unwrap_or_default()),
                duration_flag(frame),
                duration_flag(frame.saturating_sub(Duration::from_secs(1)))
            ));
        }
        let p = self.peer_timeout?;
        if stops && self.nemesis_lasting().is_some_and(|l| l >= p / 2) {
            return Some(format!(
                "--nemesis stop with --peer-timeout {}: a client stopped for {} or more holds its \
                 receive window shut long enough for the relay to end its connection; make stops \
                 shorter (--nemesis-for) or the peer timeout longer",
                duration_flag(p),
                duration_flag(p / 2)
            ));
        }
        self.script_faults().iter().find_map(|f| match f.fault {
            relay_harness::script::Fault::Stop(_, d) if d.is_none_or(|d| d >= p / 2) => {
                Some(format!(
                    "script line {}: with --peer-timeout {}, a stop must last under {} (a client \
                     stopped longer holds its receive window shut long enough for the relay to \
                     end its connection)",
                    f.line,
                    duration_flag(p),
                    duration_flag(p / 2)
                ))
            }
            _ => None,
        })
    }

    /// Why the run's partitions cannot give a verdict, if they cannot (a script's, then the
    /// nemesis's): there are no hosts to cut; a cut of L leaves a frame half-sent for up to
    /// 2L + 1 s (the cut, then TCP's backoff), and the built-in relay ends a connection whose
    /// frame stays incomplete for its frame timeout; and with a peer timeout P, a partition
    /// from P/3 up to [`surely_closed`] may or may not end a connection (an idle one sends a
    /// keepalive probe every P/6 once it has been idle P/2, and is closed at the first probe
    /// unanswered P after the last answer). A script's partitions must be short ones.
    fn partitions_refused(&self) -> Option<String> {
        let most = max_short_cut();
        let frame = duration_flag(relay::Config::default().frame_timeout);
        for f in self.script_faults() {
            let relay_harness::script::Fault::Partition(_, d) = f.fault else {
                continue;
            };
            let line = f.line;
            if self.hosts.is_none() {
                return Some(format!(
                    "script line {line}: `partition` cuts a host off the network between the relay and its clients; give --hosts N"
                ));
            }
            if d > most {
                return Some(format!(
                    "script line {line}: a partition of {} can leave a frame half-sent for twice that and a second, past the built-in relay's frame timeout ({frame}): make it {} or shorter",
                    duration_flag(d),
                    duration_flag(most)
                ));
            }
            if let Some(p) = self.peer_timeout.filter(|&p| d >= p / 3) {
                return Some(format!(
                    "script line {line}: a partition of {} with --peer-timeout {} may end connections; a script's partitions must be shorter than {} (the nemesis plays longer ones)",
                    duration_flag(d),
                    duration_flag(p),
                    duration_flag(p / 3)
                ));
            }
        }
        let n = self.nemesis.as_ref()?;
        let kind = n.kinds.iter().find(|k| k.is_partition())?;
        if self.hosts.is_none() {
            return Some(format!(
                "--nemesis {}: a partition cuts a host off the network between the relay and \
                 its clients; give --hosts N (for example --hosts 2) so there is one",
                kind.name()
            ));
        }
        let l = self.nemesis_lasting()?;
        if l > most && !self.long_partitions() {
            let longer = match self.peer_timeout {
                Some(p) => format!(
                    "at least {} (with --peer-timeout {}, those end the cut-off clients' \
                     connections on purpose)",
                    duration_flag(surely_closed(p)),
                    duration_flag(p)
                ),
                None => "give --peer-timeout so that longer ones end the cut-off clients' \
                         connections on purpose"
                    .to_string(),
            };
            return Some(format!(
                "--nemesis {}: a partition of {} (--nemesis-for, by default half \
                 --nemesis-interval) can leave a frame half-sent for twice that and a second \
                 (the cut, then TCP's backoff), and the built-in relay ends a connection whose \
                 frame stays incomplete for {frame} (its frame timeout): make partitions {} or \
                 shorter, or {longer}",
                kind.name(),
                duration_flag(l),
                duration_flag(most)
            ));
        }
        let p = self.peer_timeout?;
        (l >= p / 3 && l < surely_closed(p)).then(|| {
            format!(
                "--nemesis {}: partitions of {} with --peer-timeout {} may or may not end a \
                 connection (an idle one can be closed from a third of the peer timeout on): \
                 make them shorter than {} (nothing is lost) or at least {} (the relay ends the \
                 cut-off clients' connections) with --nemesis-for",
                kind.name(),
                duration_flag(l),
                duration_flag(p),
                duration_flag(p / 3),
                duration_flag(surely_closed(p)),
            )
        })
    }

    /// The random scenario (None for a script).
    pub fn scenario(&self) -> Option<Scenario> {
        match &self.traffic {
            Traffic::Random {
                clients,
                amount,
                payload,
                ..
            } => Some(Scenario {
                clients: *clients,
                // --duration: no count; the clock ends the sending.
                msgs: amount.each(u64::MAX),
                payload: *payload,
                seed: self.seed,
            }),
            Traffic::Script { .. } => None,
        }
    }

    /// Checks what the command line's parser cannot: every combination and limit. Returns
    /// the first problem, worded for the person who gave the flags.
    pub fn check(&self) -> Result<(), RunError> {
        if let Some(why) = self.elsewhere_refused() {
            return Err(RunError::usage(why));
        }
        if let Some(h) = self.hosts {
            if self.relay_cmd.is_some() || self.relay_addr.is_some() {
                return Err(RunError::usage("--hosts puts the built-in relay on a host of its own: it cannot be given with --relay-cmd or --relay-addr"));
            }
            if !(1..=250).contains(&h) {
                return Err(RunError::usage(format!(
                    "--hosts {h}: must be 1..=250 (one address each in 198.18.0.0/24)"
                )));
            }
        }
        if self.hosts.is_none() && !self.links.is_none() {
            return Err(RunError::usage(
                "--link-rate, --link-delay and --link-loss shape the links between hosts: give --hosts N",
            ));
        }
        if self
            .links
            .loss_pct
            .is_some_and(|l| !(0.0..=100.0).contains(&l))
        {
            return Err(RunError::usage("--link-loss: a percentage, from 0 to 100"));
        }
        if let Some(p) = self.peer_timeout {
            relay::check_peer_timeout(p).map_err(RunError::usage)?;
            if self.transport != Transport::Tcp {
                return Err(RunError::usage(
                    "--peer-timeout is a TCP setting (TCP_USER_TIMEOUT, keepalive): give --transport tcp or --hosts N",
                ));
            }
        }

        if let Some(n) = &self.nemesis {
            if n.lasting.is_some_and(|d| d.is_zero()) {
                return Err(RunError::usage(
                    "--nemesis-for 0: a fault must last a while (for example 500ms)",
                ));
            }
        }
        if let Some(why) = self.partitions_refused() {
            return Err(RunError::usage(why));
        }
        if let Some(why) = self.lasting_refused() {
            return Err(RunError::usage(why));
        }
        // Settings of the built-in relay, which another relay does not take from us.
        let other = match (&self.relay_cmd, &self.relay_addr) {
            (Some(_), _) => Some("give your relay its own in --relay-cmd"),
            (None, Some(_)) => Some("the relay at --relay-addr has its own"),
            (None, None) => None,
        };
        if let Some(other) = other {
            if self.inject.is_some() {
                return Err(RunError::usage("--inject needs the built-in relay: another relay cannot be told to break its promises"));
            }
            if self.max_buffer.is_some() {
                return Err(RunError::usage(format!(
                    "--max-buffer sets the built-in relay's bound; {other}"
                )));
            }
            if self.peer_timeout.is_some() {
                return Err(RunError::usage(format!(
                    "--peer-timeout sets the built-in relay's dead-peer bound; {other}"
                )));
            }
        }
        if let Some(cmd) = self.relay_cmd.as_deref().filter(|c| !c.contains("{addr}")) {
            return Err(RunError::usage(format!(
                "--relay-cmd {cmd:?} has no {{addr}}: it is replaced by the address the relay must listen on, e.g. --relay-cmd 'python3 fixtures/relays/minimal.py {{addr}}'"
            )));
        }
        // (Another relay's limits are its own: only the machine's apply to the run.)
        let (most, why) = if other.is_none() {
            self.backend.max_clients()
        } else {
            Backend::Epoll.max_clients()
        };
        match &self.traffic {
            Traffic::Script { path, script } => {
                if script.max_payload() > MAX_PAYLOAD {
                    return Err(RunError::usage(format!(
                        "{}: a payload of {} bytes does not fit a {DEFAULT_MAX_FRAME}-byte frame (at most {MAX_PAYLOAD})",
                        path.display(),
                        script.max_payload()
                    )));
                }
                if script.clients > most {
                    return Err(RunError::usage(format!(
                        "{}: {} clients, and at most {} fit with --backend {}: {why}",
                        path.display(),
                        script.clients,
                        relay_harness::plots::group(most as u64),
                        self.backend
                    )));
                }
            }
            Traffic::Random {
                clients,
                payload,
                pattern,
                ..
            } => {
                if *clients == 0 {
                    return Err(RunError::usage(
                        "--clients 0: a run needs one client at least",
                    ));
                }
                if *clients > most {
                    return Err(RunError::usage(format!(
                        "--clients {clients}: at most {} fit with --backend {}: {why}",
                        relay_harness::plots::group(most as u64),
                        self.backend
                    )));
                }
                if payload.max > MAX_PAYLOAD {
                    return Err(RunError::usage(format!(
                        "--payload {payload}: at most {MAX_PAYLOAD} bytes fit in a {DEFAULT_MAX_FRAME}-byte frame"
                    )));
                }
                if *pattern == Pattern::PingPong && clients % 2 == 1 {
                    return Err(RunError::usage(format!(
                        "--pattern pingpong: --clients {clients} must be even (clients pair up)"
                    )));
                }
            }
        }
        // Both end with the drain of end markers over the shared counters (blackbox.rs).
        let needs = [
            (
                self.has_deaths(),
                if self.long_partitions() {
                    "--nemesis partition longer than --peer-timeout (it ends connections)"
                } else {
                    "--nemesis kill/restart"
                },
                "to tell who sent each one",
            ),
            (
                self.sending_for().is_some(),
                "--duration",
                "so none can pass for an end marker",
            ),
        ];
        for (wanted, flag, why_ident) in needs {
            if let Some(why) = wanted
                .then(|| self.shared_counters_refused(flag, why_ident))
                .flatten()
            {
                return Err(RunError::usage(why));
            }
        }
        Ok(())
    }

    /// What a run against a relay that is already running (`--relay-addr`) cannot have besides
    /// the built-in relay's settings (see `check`): its process is not the run's, so nothing
    /// can start or kill it.
    fn elsewhere_refused(&self) -> Option<String> {
        let addr = self.relay_addr.as_ref()?;
        let kills_relay = self
            .nemesis
            .as_ref()
            .is_some_and(|n| n.kinds.contains(&Action::Relay));
        let script_kills_relay = self
            .script_faults()
            .iter()
            .any(|f| matches!(f.fault, relay_harness::script::Fault::KillRelay));
        if self.relay_cmd.is_some() {
            Some(format!("--relay-addr {addr} and --relay-cmd: give one (--relay-cmd starts a relay; --relay-addr uses one already running)"))
        } else if kills_relay || script_kills_relay {
            Some(format!(
                "--relay-addr {addr}: killing the relay needs its process, and the run did not start this one; drop `relay` from the faults"
            ))
        } else {
            None
        }
    }

    /// Why a run that needs end markers and the shared counters (`flag`: kill/restart or
    /// --duration) cannot have them, if it cannot: a receiver must tell each payload's sender
    /// from the payload (`why_ident` says why). The counters are sparse: with --msgs, any client
    /// count; a --duration has room for every pair, so it stops at [`blackbox::DURATION_CLIENTS`].
    fn shared_counters_refused(&self, flag: &str, why_ident: &str) -> Option<String> {
        let Traffic::Random {
            clients,
            payload,
            pattern,
            ..
        } = &self.traffic
        else {
            return Some(format!(
                "{flag} works on random runs; scripts use `kill NAME` lines"
            ));
        };
        if *pattern != Pattern::Mesh {
            Some(format!("{flag} needs --pattern mesh"))
        } else if payload.min < payload::IDENT {
            Some(format!(
                "{flag} needs payloads of at least {} bytes (--payload), {why_ident}",
                payload::IDENT
            ))
        } else if self.sending_for().is_some() && *clients > blackbox::DURATION_CLIENTS {
            Some(format!(
                "--duration supports up to {} clients: with no message count, the shared counters \
                 keep room for every pair of clients (clients x clients); give --msgs for more \
                 (the counters then keep room only for the receivers each client sends to)",
                relay_harness::plots::group(blackbox::DURATION_CLIENTS as u64)
            ))
        } else if blackbox::bytes_for(*clients, self.traffic_pairs()) > blackbox::MAX_BYTES {
            Some(format!(
                "{flag} with --clients {clients}: the shared counters would need {} MiB (a row per \
                 client with room for each receiver it can have, 48 bytes each), more than {} MiB; \
                 give fewer --msgs or --clients",
                relay_harness::plots::group(
                    (blackbox::bytes_for(*clients, self.traffic_pairs()) >> 20) as u64
                ),
                relay_harness::plots::group((blackbox::MAX_BYTES >> 20) as u64)
            ))
        } else {
            None
        }
    }

    /// The deadline, counted from the start barrier (the set-up has its own bound,
    /// [`RunSpec::setup_bound`]): the one given, or 10 s plus time for the volume of work at a
    /// pessimistic rate (a soak: its sending, then as long again, at least 10 s, for what it
    /// left queued and the reports, and time for an end marker on every pair of clients).
    pub fn deadline(&self) -> Duration {
        if let Some(t) = self.timeout {
            return t;
        }
        if let Some(d) = self.sending_for() {
            // A soak's clients send to nearly every other by the end, so its drain carries up
            // to clients² markers: 2,000 clients sending for 2 s needed 14 s after the barrier,
            // and the bare 12 s failed a correct relay as "timed out".
            let n = self.clients() as f64;
            let markers = Duration::from_secs_f64(n * (n - 1.0).max(0.0) / MARKERS_PER_S);
            return d + d.max(Duration::from_secs(10)) + markers;
        }
        // Faults given a length run in the first half: room for them to end, and for the work
        // after.
        let lasting = self
            .nemesis
            .as_ref()
            .and_then(|n| n.lasting)
            .map_or(0.0, |l| 2.0 * l.as_secs_f64());
        // netem's delay: four link crossings per message there and back; ping-pong waits for
        // each round.
        let delay = self.links.delay.map_or(0.0, |d| {
            let rounds = match &self.traffic {
                Traffic::Random {
                    pattern: Pattern::PingPong,
                    amount,
                    ..
                } => amount.each(u64::MAX) as f64,
                _ => 1.0,
            };
            8.0 * d.as_secs_f64() * (rounds + 10.0)
        });
        let (msgs, bytes) = match &self.traffic {
            Traffic::Script { script, .. } => {
                let total = script.total() as f64;
                (total, total * script.max_payload() as f64)
            }
            Traffic::Random {
                clients,
                amount,
                payload,
                ..
            } => {
                let msgs = amount.each(u64::MAX).saturating_mul(*clients as u64) as f64;
                (msgs, msgs * (payload.min + payload.max) as f64 / 2.0)
            }
        };
        // --link-rate: every message crosses the relay's link twice (in, then out, one each
        // way), with about 80 bytes of frame and TCP/IP around it; twice that, for ACKs and
        // retransmissions.
        let wire = self
            .links
            .rate_bits
            .map_or(0.0, |r| 2.0 * (bytes + 80.0 * msgs) * 8.0 / r as f64);
        let secs = 10.0 + msgs / 100_000.0 + bytes / 50e6 + wire + lasting + delay;
        match &self.traffic {
            Traffic::Script { .. } => Duration::from_secs_f64(secs),
            Traffic::Random { .. } => Duration::from_secs_f64(secs.ceil()),
        }
    }

    /// The set-up's bound (every fork, and every client registered): 10 s, plus 5 ms per
    /// client (about five times what a loaded 2-core machine needs at 10,000 clients).
    pub fn setup_bound(&self) -> Duration {
        Duration::from_secs(10) + Duration::from_millis(5) * self.clients() as u32
    }

    /// What each client process does, in order.
    pub fn plans(&self, transcripts: bool) -> Plans {
        let plans = match (&self.traffic, self.scenario()) {
            (Traffic::Script { script, .. }, _) => Plans::listed(script_plans(script, self.seed)),
            (Traffic::Random { pattern, .. }, Some(sc)) => match pattern {
                Pattern::PingPong => Plans::pingpong(&sc),
                Pattern::Mesh => Plans::random(&sc),
            },
            // (A random run always has a scenario.)
            (Traffic::Random { .. }, None) => Plans::listed(Vec::new()),
        };
        plans.with_transcripts(transcripts)
    }

    /// The clients' names, in order.
    pub fn names(&self) -> Vec<String> {
        match &self.traffic {
            Traffic::Script { script, .. } => script.names[..script.clients].to_vec(),
            Traffic::Random { clients, .. } => (0..*clients).map(client_name).collect(),
        }
    }

    /// Phases (a script's barriers split it; a random run has one).
    pub fn phases(&self) -> usize {
        match &self.traffic {
            Traffic::Script { script, .. } => script.phases.len(),
            Traffic::Random { .. } => 1,
        }
    }

    /// A script's fault lines.
    pub fn script_faults(&self) -> Vec<FaultLine> {
        match &self.traffic {
            Traffic::Script { script, .. } => script.faults.clone(),
            Traffic::Random { .. } => Vec::new(),
        }
    }

    /// The built-in relay's output bound.
    pub fn relay_max_buffer(&self) -> usize {
        self.max_buffer.unwrap_or(relay::DEFAULT_MAX_BUFFER)
    }

    /// The command that runs this again, exactly (printed in every report).
    pub fn replay(&self) -> String {
        let timeout = duration_flag(self.deadline());
        let mut r = match &self.traffic {
            Traffic::Script { path, .. } => format!(
                "relay-sim run --scenario {} --seed {} --transport {} --backend {} --timeout {timeout}",
                path.display(),
                self.seed,
                self.transport,
                self.backend,
            ),
            Traffic::Random {
                clients,
                amount,
                payload,
                pattern,
            } => {
                let how_much = match amount {
                    Amount::For(d) => format!("--duration {}", duration_flag(*d)),
                    Amount::Msgs(m) => format!("--msgs {m}"),
                };
                let mut r = format!(
                    "relay-sim run --clients {clients} {how_much} --seed {} --payload {payload} --transport {} --backend {} --timeout {timeout}",
                    self.seed, self.transport, self.backend,
                );
                if *pattern == Pattern::PingPong {
                    r.push_str(" --pattern pingpong");
                }
                r
            }
        };
        if let Some(cmd) = &self.relay_cmd {
            r.push_str(&format!(" --relay-cmd '{}'", cmd.replace('\'', "'\\''")));
        }
        if let Some(h) = self.hosts {
            r.push_str(&format!(" --hosts {h}"));
            r.push_str(&self.links.flags());
        }
        if let Some(addr) = &self.relay_addr {
            r.push_str(&format!(
                " --relay-addr '{}'",
                addr.to_string().replace('\'', "'\\''")
            ));
        }
        if let Some(c) = self.write_chunks {
            r.push_str(&format!(" --write-chunks {}..{}", c.min, c.max));
        }
        if let Some(b) = self.max_buffer {
            r.push_str(&format!(" --max-buffer {b}"));
        }
        if let Some(p) = self.peer_timeout {
            r.push_str(&format!(" --peer-timeout {}", duration_flag(p)));
        }
        if let Some(i) = self.inject {
            r.push_str(&format!(" --inject {i}"));
        }
        if let Some(n) = &self.nemesis {
            let every = duration_flag(n.interval);
            r.push_str(&format!(
                " --nemesis {} --nemesis-interval {every}",
                nemesis_list(&n.kinds)
            ));
            if let Some(d) = n.lasting {
                r.push_str(&format!(" --nemesis-for {}", duration_flag(d)));
            }
        }
        r
    }

    /// The run's settings as the report records them.
    pub fn config(&self) -> RunConfig {
        let foreign = self.relay_cmd.is_some() || self.relay_addr.is_some();
        let (clients, msgs_per_client, total_msgs, payload, scenario, pattern, sizes) =
            match &self.traffic {
                Traffic::Script { path, script } => {
                    let total = script.total();
                    (
                        script.clients,
                        total / script.clients.max(1) as u64,
                        total,
                        "scripted".to_string(),
                        Some(path.display().to_string()),
                        "script".to_string(),
                        script.sizes(),
                    )
                }
                Traffic::Random {
                    clients,
                    amount,
                    payload,
                    pattern,
                } => {
                    // With --duration, what was sent is filled in after the run.
                    let msgs = amount.each(0);
                    (
                        *clients,
                        msgs,
                        msgs.saturating_mul(*clients as u64),
                        payload.to_string(),
                        None,
                        pattern.to_string(),
                        Sizes::of(*payload),
                    )
                }
            };
        let script_faults = self.script_faults().len();
        RunConfig {
            clients,
            msgs_per_client,
            total_msgs,
            payload,
            transport: self.transport.to_string(),
            backend: if foreign {
                "foreign".into()
            } else {
                self.backend.to_string()
            },
            relay_spin: if foreign {
                "foreign".into()
            } else {
                self.relay_spin.to_string()
            },
            relay_max_buffer: (!foreign).then(|| self.relay_max_buffer()),
            seed: self.seed,
            timeout_s: self.deadline().as_secs_f64(),
            scenario,
            phases: self.phases(),
            inject: self.inject.map(|i| i.to_string()),
            relay_cmd: self.relay_cmd.clone(),
            relay_addr: self.relay_addr.as_ref().map(|a| a.to_string()),
            hosts: self.hosts,
            links: (!self.links.is_none()).then(|| self.links.describe()),
            nemesis: match &self.nemesis {
                Some(n) => Some(format!(
                    "{} every {}{}",
                    nemesis_list(&n.kinds),
                    duration_flag(n.interval),
                    n.lasting.map_or(String::new(), |d| format!(
                        ", each for {}",
                        duration_flag(d)
                    ))
                )),
                None => (script_faults > 0)
                    .then(|| format!("{script_faults} fault line(s) in the script")),
            },
            pattern,
            sizes,
            duration_s: self.sending_for().map(|d| d.as_secs_f64()),
        }
    }
}

/// The longest partition that leaves the built-in relay's connections alone: a frame it cuts
/// in half waits the cut and TCP's backoff after it (at most the cut again and a second), which
/// must stay under the relay's frame timeout.
pub fn max_short_cut() -> Duration {
    relay::Config::default()
        .frame_timeout
        .saturating_sub(Duration::from_secs(1))
        / 2
}

/// How long a peer must stay silent before a relay with peer timeout `p` has surely closed
/// its connection: with data unacknowledged, `p` (TCP_USER_TIMEOUT); idle, up to a keepalive
/// interval (`p`/6) more; and a second for the timers' rounding.
pub fn surely_closed(p: Duration) -> Duration {
    p + p / 6 + Duration::from_secs(1)
}

/// The actions of one `--nemesis` list. (An alias, so the command line's parser takes the
/// list as one value: it reads a bare `Vec` as "the flag may be given several times".)
pub type NemesisKinds = Vec<Action>;

/// A nemesis's kinds as `--nemesis` takes them: `kill,restart`.
pub fn nemesis_list(kinds: &[Action]) -> String {
    kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
}

/// The actions of a `--nemesis` list (each once, in the order given).
pub fn nemesis_kinds(s: &str) -> Result<NemesisKinds, String> {
    let mut kinds = Vec::new();
    for w in s.split(',').map(str::trim) {
        let a = match w {
            "stop" => Action::Stop,
            "kill" => Action::Kill,
            "restart" => Action::Restart,
            "relay" => Action::Relay,
            "partition" => Action::Partition,
            "partition-relay" => Action::PartitionRelay,
            _ => {
                return Err(format!(
                    "unknown nemesis {w:?}: use stop, kill, restart, relay, partition or \
                     partition-relay, comma-separated"
                ))
            }
        };
        if !kinds.contains(&a) {
            kinds.push(a);
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backends_are_the_relays() {
        use clap::ValueEnum;
        let ours: Vec<&str> = Backend::value_variants().iter().map(|b| b.name()).collect();
        assert_eq!(ours, relay::backend::NAMES);
    }

    #[test]
    fn durations_read_back_as_themselves() {
        assert_eq!(duration_flag(Duration::from_secs(12)), "12s");
        assert_eq!(duration_flag(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_flag(Duration::from_micros(10)), "1ms");
    }

    #[test]
    fn nemesis_lists_parse_once_each_in_order() {
        assert_eq!(
            nemesis_kinds("restart, kill,restart").unwrap(),
            [Action::Restart, Action::Kill]
        );
        assert_eq!(nemesis_list(&[Action::Stop, Action::Relay]), "stop,relay");
        assert!(nemesis_kinds("stop,boom").unwrap_err().contains("\"boom\""));
    }
}
