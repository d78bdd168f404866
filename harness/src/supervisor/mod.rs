//! The supervisor: fork the relay and the clients, hold the start barrier, collect their
//! records, enforce the deadline, and reap every child on every path.
//!
//! ```text
//!   supervisor ──fork──> relay      (stop pipe: closing it stops the relay)
//!              ──fork──> c0..cN-1   (a barrier pipe per phase: closing it starts them all at once;
//!                                    stop pipe: closing it asks for their records now)
//!              <──────── one event pipe per child: Ready, Done(records), Failed
//! ```
//! A child's event pipe reaching end of file means the child has exited: the supervisor
//! learns of deaths from the pipes it already polls, and reaps with waitpid afterwards.
//!
//! The pieces, one file each: what a child gets ([`ctx`]: `RelayCtx`, `ClientCtx`), forking
//! and pipes (`spawn`), the child table and reaping (`children`), the faults (`faults`:
//! nemesis and script, one `strike`), SIGINT/SIGTERM (`signals`), and the event loop that
//! joins them (`run`). The supervisor owns the processes; what it tells its caller is a
//! stream of [`Milestone`]s and, at the end, an [`Outcome`].

mod children;
mod ctx;
mod faults;
mod run;
mod signals;
mod spawn;

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::blackbox::BlackBox;
use crate::record::{ClientReport, RelayReport};
use crate::script::FaultLine;

pub use ctx::{peak_rss_kib, ClientCtx, RelayCtx};
pub use signals::Signals;

/// Steps of a run, for a caller that narrates it (`-v`), tells its story (the demo) or shows
/// its progress (a bar): the supervisor owns the processes, its caller only hears of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Milestone {
    /// A child was forked.
    Forked {
        /// relay, c0, ...
        role: String,
        /// Its pid.
        pid: i32,
    },
    /// A client registered and waits at the start barrier.
    Registered {
        /// c0, ...
        role: String,
    },
    /// Every client registered; the barrier is released.
    Released,
    /// Every client finished a phase; the next one starts.
    PhaseStarted(usize),
    /// A client reported its records.
    Reported {
        /// c0, ...
        role: String,
    },
    /// The run is ending early, and why.
    Stopping(Ending),
    /// The nemesis acted on a client or the relay.
    Nemesis {
        /// c0, ..., or relay.
        role: String,
        /// What it did.
        action: Action,
    },
    /// Every 100 ms once the exchange has run a second, when `Limits::progress` asks for it:
    /// how far the run is (for a progress bar; not traced).
    Progress {
        /// Messages delivered so far.
        delivered: u64,
        /// Messages due in all.
        expected: u64,
        /// Since the start barrier opened.
        elapsed: Duration,
    },
    /// A child was reaped.
    Exited {
        /// relay, c0, ...
        role: String,
        /// How it ended.
        status: String,
    },
}

/// Limits for one supervised run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Number of client processes.
    pub clients: usize,
    /// Number of phases (each ends at a global barrier).
    pub phases: usize,
    /// The clients' names, for milestones and statuses (`c{i}` where missing).
    pub names: Vec<String>,
    /// Descriptors the relay child keeps besides its own pipes (its listening socket).
    pub relay_fds: Vec<RawFd>,
    /// Process faults: every so often, stop, kill or restart a random client, or kill the relay.
    pub nemesis: Option<Nemesis>,
    /// Runs that kill clients: counters shared with every child, read by the verifier.
    pub blackbox: Option<Arc<BlackBox>>,
    /// A script's fault lines, each struck when every live client has finished its phase.
    pub script_faults: Vec<FaultLine>,
    /// `--trace`: events kept per process (None: no tracing).
    pub trace: Option<usize>,
    /// Traced events from before the supervisor started (the listening socket's creation).
    pub trace_prelude: Vec<(u64, String)>,
    /// Progress milestones for a bar, once the exchange has run a second: the messages the
    /// clients are due to receive in all (None: none).
    pub progress: Option<u64>,
    /// Where the clients count what arrived and say when they have nothing left to write
    /// (the progress bar and the quiet rule read it).
    pub tally: Option<Arc<crate::blackbox::Tally>>,
    /// The quiet rule: once every client has written all it had to send, nothing arriving
    /// anywhere for this long ends the run as stalled (None: only the deadline ends it).
    pub quiet: Option<Duration>,
    /// The relay is another program (it cannot be asked to stop through its pipe: it gets
    /// SIGTERM at once when the run is over).
    pub foreign_relay: bool,
    /// The relay is already running elsewhere (`--relay-addr`, this address): no process is
    /// forked for it, and nothing here can stop, kill or measure it.
    pub relay_elsewhere: Option<String>,
    /// `--hosts`: the hosts' links to their switch, which `partition` faults cut and heal.
    pub links: Option<crate::netns::Links>,
    /// From the start barrier until every client has reported: the work's bound.
    pub deadline: Duration,
    /// From the first fork until every client has registered: the set-up's own bound (see
    /// `setup_bound`), so a slow set-up never eats the work's time.
    pub setup: Duration,
    /// How long stopped children get to report or exit before SIGTERM, and SIGTERM before SIGKILL.
    pub grace: Duration,
}

/// A process or network fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// SIGSTOP a client, SIGCONT it later: a slow consumer.
    Stop,
    /// SIGCONT a stopped client.
    Cont,
    /// SIGKILL a client for good.
    Kill,
    /// SIGKILL a client, then start a new process under its name that carries on.
    Restart,
    /// The new process of a restarted client was forked.
    Restarted,
    /// SIGKILL the relay: the run ends.
    Relay,
    /// Cut a client host off the switch (`--hosts`), then heal it.
    Partition,
    /// Cut the relay's host off the switch: every client at once.
    PartitionRelay,
    /// A cut host's link is up again.
    Heal,
}

impl Action {
    /// What it did to `role`, in a few words: `SIGKILL c3 (it will restart)`.
    pub fn describe(self, role: &str) -> String {
        match self {
            Action::Stop => format!("SIGSTOP {role}"),
            Action::Cont => format!("SIGCONT {role}"),
            Action::Kill => format!("SIGKILL {role} (for good)"),
            Action::Restart => format!("SIGKILL {role} (it will restart)"),
            Action::Restarted => format!("{role} restarted"),
            Action::Relay => "SIGKILL the relay".to_string(),
            Action::Partition => format!("cut {role} off the switch"),
            Action::PartitionRelay => "cut the relay's host off the switch".to_string(),
            Action::Heal => format!("healed {role}: its link to the switch is up again"),
        }
    }

    /// The word for it (`stop`, `kill`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Cont => "cont",
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::Restarted => "restarted",
            Action::Relay => "relay",
            Action::Partition => "partition",
            Action::PartitionRelay => "partition-relay",
            Action::Heal => "heal",
        }
    }

    /// A network fault (`--hosts`), not a signal.
    pub fn is_partition(self) -> bool {
        matches!(self, Action::Partition | Action::PartitionRelay)
    }
}

/// The nemesis: every `interval` after the barrier, one action drawn from `kinds` on one client
/// (both drawn with a PRNG seeded by `seed`, so a seed replays the same faults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nemesis {
    /// What it may do: Stop, Kill, Restart, Relay, Partition, PartitionRelay.
    pub kinds: Vec<Action>,
    /// Time between two actions.
    pub interval: Duration,
    /// How long a client stays stopped, dead before its restart, or a host cut off.
    pub pause: Duration,
    /// Seed for picking actions and victims.
    pub seed: u64,
    /// Partitions outlast the relay's dead-peer bound: the relay ends the cut-off clients'
    /// connections, so their processes end with the cut (as killed clients', and so
    /// accounted) and new ones carry on under their names after the heal.
    pub long_partitions: bool,
    /// The relay's dead-peer bound, if it has one: after a cut, the next action waits until
    /// TCP may have resent what it dropped (always), and this long again (cuts in a row would
    /// otherwise add up past the bound).
    pub hold_after_cuts: Option<Duration>,
}

/// One nemesis action, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NemesisEvent {
    /// What it did.
    pub action: Action,
    /// The client, `relay`, or a host (`host1`: a partition).
    pub role: String,
    /// Milliseconds after the barrier.
    pub at_ms: u64,
    /// How long the client stayed stopped (dead, before its restart; a host cut off), in
    /// milliseconds.
    pub for_ms: u64,
}

impl Outcome {
    /// When the last client to report had finished (CLOCK_MONOTONIC ns), if any reported.
    pub fn last_finished_ns(&self) -> Option<u64> {
        self.reports.iter().flatten().map(|r| r.finished_ns).max()
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Every client reported its records.
    Finished,
    /// The deadline passed first.
    TimedOut,
    /// The set-up's bound (given) passed before every client registered (how many had).
    SetupTimedOut(usize, Duration),
    /// Every client had written all it had to send, and nothing arrived anywhere for this
    /// long (the quiet rule): what had not arrived was not coming.
    Stalled(Duration),
    /// SIGINT or SIGTERM (the number) reached the supervisor.
    Interrupted(i32),
    /// The relay exited before the clients were done.
    RelayDied(String),
    /// The nemesis killed the relay (its exit status).
    RelayKilled(String),
    /// A client exited without reporting.
    ClientDied(usize, String),
    /// A child could not start (connect or register failed).
    StartFailed(String),
    /// A network fault could not be made or healed (`ip` failed): why.
    FaultFailed(String),
}

/// Everything the supervisor learned.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// Each client's records, if it reported.
    pub reports: Vec<Option<ClientReport>>,
    /// Exit status of every child, as text, by role (`relay`, `c0`, ...).
    pub statuses: Vec<(String, String)>,
    /// From the first fork until all clients were registered.
    pub register: Duration,
    /// From the first fork until the last client was forked (part of `register`).
    pub forks: Duration,
    /// CLOCK_MONOTONIC ns at which the barrier was released (0 if never).
    pub released_ns: u64,
    /// Instant the barrier was released.
    pub released_at: Option<Instant>,
    /// Instant the last report arrived (or the run was cut short).
    pub ended_at: Instant,
    /// The work's deadline, from the start barrier, as it stood at the end (partitions move
    /// it later: `Limits::deadline` plus what TCP was held back).
    pub deadline: Duration,
    /// What the relay reported as it stopped (its trace moved into `timeline`), if it did.
    pub relay: Option<RelayReport>,
    /// The supervisor's own CPU time.
    pub supervisor_cpu: crate::record::Cpu,
    /// The supervisor's own peak memory, KiB.
    pub supervisor_peak_rss_kib: u64,
    /// What the nemesis did.
    pub nemesis: Vec<NemesisEvent>,
    /// `--trace`: every process's events, merged.
    pub timeline: Option<crate::trace::Timeline>,
}

/// Why supervision could not even start.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// pipe(2) or fork(2) failed.
    #[error(
        "{what} failed: {source}; check the process and open-file limits (ulimit -u, ulimit -n)"
    )]
    Sys {
        /// The call.
        what: &'static str,
        /// The cause.
        source: nix::Error,
    },
    /// `supervise` was called with other threads running: fork would copy only the caller.
    #[error("the supervisor must run in a single-threaded process, and this one has {0} threads: fork() copies only the calling thread (run it in a process of its own)")]
    Threads(usize),
}

/// Runs one supervised run: forks the relay (running `relay`), then the clients (each running
/// `client`), and returns when every client has reported, or the deadline, a death or a signal
/// (caught by `signals`, installed by the caller before it made anything) ended the run. Every
/// child has been reaped when this returns. (A signal caught before the call ends the run at
/// the first wait, after the forks, through the same cleanup.)
///
/// # Safety
/// The process must be single-threaded when it calls this, and stay so until it returns
/// (neither `on` nor the closures may start a thread in this process): the children are
/// forked copies that run ordinary Rust code, which is sound only if no other thread held a
/// lock at the fork. It checks the first half ([`SuperviseError::Threads`]).
pub unsafe fn supervise(
    limits: &Limits,
    signals: &Signals,
    relay: impl FnOnce(RelayCtx) -> i32,
    mut client: impl FnMut(ClientCtx) -> i32,
    on: &mut dyn FnMut(Milestone),
) -> Result<Outcome, SuperviseError> {
    let threads = threads();
    if threads > 1 {
        return Err(SuperviseError::Threads(threads));
    }
    // SAFETY: single-threaded, as this function's contract says and the check above saw.
    let run = unsafe { run::Run::start(limits, signals, relay, &mut client, on) }?;
    run.run()
}

/// Threads in this process (/proc/self/status), 1 if it cannot be read.
pub fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// A milestone in a few words (what `-v` prints after "relay-sim: ").
impl std::fmt::Display for Milestone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Milestone::Forked { role, pid } => write!(f, "forked {role} (pid {pid})"),
            Milestone::Registered { role } => write!(f, "{role} registered"),
            Milestone::Released => write!(f, "every client registered; barrier released"),
            Milestone::PhaseStarted(p) => write!(f, "phase {p} started"),
            Milestone::Reported { role } => write!(f, "{role} reported"),
            Milestone::Stopping(e) => write!(f, "stopping early: {e:?}"),
            Milestone::Nemesis { role, action } => {
                write!(f, "nemesis: {}", action.describe(role))
            }
            Milestone::Progress {
                delivered,
                expected,
                ..
            } => write!(f, "{delivered} of {expected} messages delivered"),
            Milestone::Exited { role, status } => write!(f, "{role} {status}"),
        }
    }
}

impl Milestone {
    /// The milestone as a sentence of the demo's story, which explains each step (the
    /// supervisor's pid is this process's: the story is told by the supervisor's caller).
    pub fn story(&self) -> String {
        match self {
            Milestone::Forked { role, pid } => {
                format!(
                    "supervisor (pid {}) forked {role} (pid {pid})",
                    std::process::id()
                )
            }
            Milestone::Registered { role } => {
                format!("{role} connected, sent HELLO, got WELCOME; waits at the barrier")
            }
            Milestone::Released => {
                "supervisor: everyone registered; closes the barrier pipe, and all start at once"
                    .into()
            }
            Milestone::PhaseStarted(p) => {
                format!("supervisor: every client finished; phase {p} starts")
            }
            Milestone::Reported { role } => {
                format!("{role} is done: sends its records up its event pipe and exits")
            }
            Milestone::Exited { role, status } => format!("supervisor reaped {role}: {status}"),
            Milestone::Nemesis { .. } => self.to_string(),
            Milestone::Stopping(_) | Milestone::Progress { .. } => format!("supervisor: {self}"),
        }
    }
}

/// A milestone as a line of the trace: what happened at the level of system calls.
fn milestone_text(m: &Milestone) -> String {
    match m {
        Milestone::Forked { role, pid } => format!("fork() -> {role} is pid {pid}"),
        Milestone::Registered { role } => {
            format!("{role} is registered (a line on its event pipe)")
        }
        Milestone::Released => {
            "closed barrier 0's write end: every client blocked in read() on it gets 0 at once"
                .into()
        }
        Milestone::PhaseStarted(p) => {
            format!("closed barrier {p}'s write end: phase {p} starts everywhere at once")
        }
        Milestone::Reported { role } => format!("{role} sent its records"),
        Milestone::Exited { role, status } => format!("waitpid(): {role} {status}"),
        Milestone::Stopping(e) => format!("ending the run early: {e:?}"),
        Milestone::Nemesis { role, action } => match action {
            Action::Partition | Action::PartitionRelay | Action::Heal => {
                let host = if role == "relay" {
                    "the relay's host".to_string()
                } else {
                    role.clone()
                };
                if *action == Action::Heal {
                    format!(
                        "nemesis: heal: {host} back on the switch (`ip link set DEV up` on its \
                         link's end there): TCP's next retransmission gets through"
                    )
                } else {
                    format!(
                        "nemesis: partition: {host} cut off the switch (`ip link set DEV down` \
                         on its link's end there): nothing crosses, and TCP on both sides \
                         retransmits what it sent"
                    )
                }
            }
            _ => format!("nemesis: {} {role}", action.name()),
        },
        Milestone::Progress { .. } => m.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test threads are threads: `supervise` refuses before it forks anything.
    #[test]
    fn supervise_refuses_a_process_with_other_threads() {
        let limits = Limits {
            clients: 1,
            phases: 1,
            names: Vec::new(),
            relay_fds: Vec::new(),
            nemesis: None,
            blackbox: None,
            script_faults: Vec::new(),
            trace: None,
            trace_prelude: Vec::new(),
            progress: None,
            tally: None,
            quiet: None,
            foreign_relay: false,
            relay_elsewhere: None,
            links: None,
            deadline: Duration::from_secs(1),
            setup: Duration::from_secs(1),
            grace: Duration::from_secs(1),
        };
        let signals = Signals::install().unwrap();
        // SAFETY: it is the contract under test: refused before any fork.
        let r = unsafe { supervise(&limits, &signals, |_| 0, |_| 0, &mut |_| {}) };
        let e = r.expect_err("refused");
        assert!(matches!(e, SuperviseError::Threads(n) if n >= 2), "{e}");
        assert!(e.to_string().contains("single-threaded"), "{e}");
    }
}
