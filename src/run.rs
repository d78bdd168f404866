//! One run, from a [`RunSpec`] to its report, as a library call: [`run`] makes the socket,
//! forks the relay and the clients under the supervisor, verifies what they recorded and
//! builds the report. The CLI (src/cli/run.rs) only parses flags into a spec, calls this, and
//! renders what comes back; a Rust program can do the same.
//!
//! ```no_run
//! # use relay_sim::{run, spec::*};
//! # use relay_harness::payload::PayloadSize;
//! let spec = RunSpec {
//!     traffic: Traffic::Random {
//!         clients: 4,
//!         amount: Amount::Msgs(1000),
//!         payload: PayloadSize { min: 64, max: 64 },
//!         pattern: Pattern::Mesh,
//!     },
//!     ..RunSpec::new(1)
//! };
//! let signals = relay_harness::supervisor::Signals::install().unwrap();
//! // In a single-threaded process (it forks): see `run`.
//! let ran = unsafe { run::run(&spec, &signals, &run::Options::default(), &mut |_| {}) }.unwrap();
//! assert_eq!(ran.report.verdict, relay_harness::report::Verdict::Pass);
//! ```

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_harness::blackbox::{BlackBox, Tally};
use relay_harness::exit;
use relay_harness::janitor;
use relay_harness::plan::{Names, Plans};
use relay_harness::report::{self, signal_name, Report};
use relay_harness::supervisor::{
    supervise, Ending, Limits, Milestone, Nemesis, Outcome, RelayCtx, Signals,
};
use relay_harness::verify::{verify_with, Deaths, Verification};
use relay_trace::now_ns;

use crate::relay::inject::Inject;
use crate::relay::{self, Spin};
use crate::spec::{RunError, RunSpec, Transport};
use crate::sys::{self, Addr, Listener};

/// How a run is watched (none of it changes what is checked).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Keep each client's transcript of what it sent and got (the demo's story).
    pub transcripts: bool,
    /// Progress milestones (`Milestone::Progress`, every 100 ms once the exchange has run a
    /// second), for the caller to draw a bar with.
    pub progress: bool,
    /// Where to keep a foreign relay's log (relay.log); without it, the log goes with the
    /// run's temporary directory and only its tail reaches the report.
    pub relay_log_dir: Option<PathBuf>,
    /// Say on stderr that the janitor started, with its pid.
    pub verbose: bool,
}

/// What a run produced.
pub struct Ran {
    /// The report, as every reporter renders it.
    pub report: Report,
    /// What the supervisor learned (each client's records, statuses, the timeline).
    pub outcome: Outcome,
    /// The verifier's findings (the pictures are drawn from them).
    pub verification: Verification,
    /// The clients' names, in order.
    pub names: Vec<String>,
}

/// How long clients keep trying to reach a foreign relay that is not listening yet.
const FOREIGN_LISTEN_WAIT: Duration = Duration::from_secs(10);
/// How long a client retries a refused connection to a relay already running elsewhere.
const ELSEWHERE_LISTEN_WAIT: Duration = Duration::from_secs(1);

impl RunSpec {
    /// A mesh of 8 clients sending 1,000 64-byte messages each over a Unix socket to the
    /// built-in select() relay: the defaults of `relay-sim run`, with this seed.
    pub fn new(seed: u64) -> RunSpec {
        use crate::spec::{Amount, Backend, Pattern, Traffic};
        RunSpec {
            traffic: Traffic::Random {
                clients: 8,
                amount: Amount::Msgs(1000),
                payload: relay_harness::payload::PayloadSize { min: 64, max: 64 },
                pattern: Pattern::Mesh,
            },
            seed,
            transport: Transport::Unix,
            backend: Backend::Select,
            relay_spin: Spin::Auto,
            max_buffer: None,
            peer_timeout: None,
            inject: None,
            relay_cmd: None,
            relay_addr: None,
            hosts: None,
            links: Default::default(),
            timeout: None,
            quiet: Some(Duration::from_secs(1)),
            write_chunks: None,
            nemesis: None,
            trace: false,
        }
    }
}

/// Runs `spec` from start to report. `on` hears every milestone as it happens; `signals`
/// (installed before anything was made) turn SIGINT and SIGTERM into an orderly end. Every
/// process is reaped and every file removed on every path, and a janitor process cleans up
/// even if this process is SIGKILLed.
///
/// # Safety
/// It forks: the process must be single-threaded when it calls this and until it returns
/// (see [`relay_harness::supervisor::supervise`]). A test runs it from a `harness = false`
/// test (tests/library.rs), whose main thread is the only one.
pub unsafe fn run(
    spec: &RunSpec,
    signals: &Signals,
    opts: &Options,
    on: &mut dyn FnMut(Milestone),
) -> Result<Ran, RunError> {
    crate::spec::raise_fd_limit();
    spec.check()?;
    // Before the first fork (the janitor's), as `supervise` checks before its own.
    let threads = relay_harness::supervisor::threads();
    if threads > 1 {
        return Err(RunError::env(
            relay_harness::supervisor::SuperviseError::Threads(threads).to_string(),
        ));
    }
    if let Some(sig) = signals.caught() {
        // Before anything was made: nothing to clean up, but say so, with the seed.
        return Err(RunError {
            code: exit::interrupted(sig),
            message: format!(
                "interrupted by {} before the run started (seed {}); nothing was left behind",
                signal_name(sig),
                spec.seed
            ),
        });
    }
    // A SIGKILL gives us no chance to clean up: the janitor, forked first (single-threaded
    // here, as at every fork), removes what the run made if we die without saying "done".
    janitor::start().map_err(|e| {
        RunError::env(format!(
            "cannot start the cleanup process: {e}; check the process limit (ulimit -u)"
        ))
    })?;
    let _janitor = janitor::Done; // dropped last: after `dir`, on every return
    if let (true, Some(pid)) = (opts.verbose, janitor::pid()) {
        eprintln!(
            "relay-sim: started the janitor, which cleans up if relay-sim is SIGKILLed (pid {pid})"
        );
    }
    // The socket lives in a fresh private directory, removed on every path when `dir` drops.
    let dir = tempfile::Builder::new()
        .prefix("relay-sim-")
        .tempdir()
        .map_err(|e| {
            RunError::env(format!(
                "cannot create a temporary directory: {e}; check TMPDIR"
            ))
        })?;
    janitor::dir(dir.path());
    let _ = sys::raise_nofile_limit();
    let plans = spec.plans(opts.transcripts);
    relay_harness::payload::warm();
    let mut prelude = Vec::new();
    // --hosts: the hosts and their switch, held by processes of this run until it returns.
    if spec.hosts.is_some() {
        // SAFETY: single-threaded (this function's contract).
        unsafe { root_in_a_user_namespace() }.map_err(|e| {
            RunError::env(format!(
                "--hosts needs network namespaces: {e}; run as root, or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
            ))
        })?;
    }
    let network = match spec.hosts {
        // SAFETY: single-threaded (this function's contract): the holders are forked now.
        Some(n) => Some(
            unsafe { relay_harness::netns::Network::build(n, &spec.links) }.map_err(|e| {
                if e.kind() == std::io::ErrorKind::Unsupported {
                    RunError::env(e.to_string())
                } else {
                    RunError::env(format!(
                        "--hosts {n}: cannot build the hosts' network: {e} (it needs root and iproute2)"
                    ))
                }
            })?,
        ),
        None => None,
    };
    let (relay_side, addr) = relay_side(spec, dir.path(), opts, network.as_ref(), &mut prelude)?;
    let mut limits = limits(spec, opts, &plans, &relay_side, prelude)?;
    limits.links = network.as_ref().map(|net| net.links());
    let relay_log = match &relay_side {
        RelaySide::Foreign { log, .. } => Some(log.clone()),
        RelaySide::Builtin(_) | RelaySide::Elsewhere => None,
    };
    // SAFETY: single-threaded (this function's contract).
    let client_hosts: Option<Vec<PathBuf>> = network
        .as_ref()
        .map(|net| (0..plans.len()).map(|i| net.client_host(i)).collect());
    // SAFETY: single-threaded (this function's contract).
    let outcome = unsafe {
        supervise_run(
            spec,
            &limits,
            signals,
            relay_side,
            (&addr, client_hosts.as_deref()),
            &plans,
            on,
        )
    }?;
    drop(network); // (after every child is gone: their hosts go with their holders)
    let t = Instant::now();
    let v = verify_run(spec, &limits, &plans, &outcome);
    let verify_time = t.elapsed();
    if let Some(bb) = limits.blackbox.as_ref().filter(|bb| bb.overflowed()) {
        return Err(RunError::env(format!(
            "no verdict: the shared counters had room for {} receivers per sender, and a client \
             sent to more: only a relay that makes up deliveries gets here; check the relay",
            relay_harness::plots::group(bb.capacity() as u64)
        )));
    }
    let names = spec.names();
    let mut config = spec.config();
    if spec.sending_for().is_some() {
        // What the clients sent in the time they had.
        config.total_msgs = v.totals.sent;
        config.msgs_per_client = v.totals.sent / config.clients.max(1) as u64;
    }
    let mut r = report::build(config, &names, spec.replay(), &outcome, &v, verify_time);
    r.trace = outcome.timeline.clone();
    if let Some(log) = &relay_log {
        // Named only where it is kept: without a log folder it goes with the run's temp dir.
        r.relay_log = opts
            .relay_log_dir
            .as_ref()
            .map(|_| log.display().to_string());
        if r.exit_code != exit::OK {
            r.relay_log_tail = std::fs::read_to_string(log).ok().map(|t| {
                let lines: Vec<&str> = t.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            });
        }
    }
    Ok(Ran {
        report: r,
        outcome,
        verification: v,
        names,
    })
}

/// The relay of a run: ours (its listener bound before the forks), another program, or one
/// already running elsewhere (`--relay-addr`: nothing is started).
enum RelaySide {
    Builtin(Listener),
    Foreign { command: String, log: PathBuf },
    Elsewhere,
}

/// Where the relay listens, and which relay: ours, bound now (clients may connect the moment
/// they exist), or the command, told its address.
fn relay_side(
    spec: &RunSpec,
    dir: &Path,
    opts: &Options,
    network: Option<&relay_harness::netns::Network>,
    prelude: &mut Vec<(u64, String)>,
) -> Result<(RelaySide, Addr), RunError> {
    if let Some(addr) = &spec.relay_addr {
        return Ok((RelaySide::Elsewhere, addr.clone()));
    }
    let addr = match (spec.transport, network) {
        (_, Some(net)) => Addr::Tcp(std::net::SocketAddr::from((net.relay_ip(), 0))),
        (Transport::Tcp, None) => Addr::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        (Transport::Unix, None) => Addr::Unix(dir.join("relay.sock")),
    };
    let Some(cmd) = &spec.relay_cmd else {
        let mut listener = match network {
            // The socket is made inside the relay's host (a socket keeps the namespace it was
            // made in, and so do the connections it accepts); the supervisor then goes home.
            Some(net) => bind_on_host(&net.hosts[0], &addr),
            None => Listener::bind(&addr).map_err(|e| e.to_string()),
        }
        .map_err(RunError::env)?;
        // The supervisor removes the directory; no process removes the file on its own drop.
        listener.keep_file();
        if spec.trace {
            let fd = listener.as_fd().as_raw_fd();
            prelude.push((
                now_ns(),
                format!("socket(), bind({addr}), listen() -> fd {fd}: the relay's listening socket, made before any fork so clients can connect as soon as they exist"),
            ));
        }
        let bound = listener
            .local_addr()
            .map_err(|e| RunError::env(format!("cannot read the relay's address: {e}")))?;
        return Ok((RelaySide::Builtin(listener), bound));
    };
    let addr = foreign_addr(addr)
        .map_err(|e| RunError::env(format!("cannot find a free port for the relay: {e}")))?;
    let log = match &opts.relay_log_dir {
        Some(folder) => {
            let _ = std::fs::create_dir_all(folder);
            folder.join("relay.log")
        }
        None => dir.join("relay.log"),
    };
    let addr_text = match &addr {
        Addr::Unix(p) => p.display().to_string(),
        Addr::Tcp(sa) => sa.to_string(),
    };
    let command = cmd.replace("{addr}", &addr_text);
    Ok((RelaySide::Foreign { command, log }, addr))
}

/// Without root, makes this process root of a new user namespace (mapped to the real user)
/// with a new network namespace of its own, so it may build `--hosts`' namespaces and links:
/// nothing in the machine's own network changes, and the process stays there until it exits.
/// As root, does nothing.
///
/// # Safety
/// The process must be single-threaded (unshare(CLONE_NEWUSER) requires it, and every later
/// fork must see the change).
unsafe fn root_in_a_user_namespace() -> std::io::Result<()> {
    use nix::sched::{unshare, CloneFlags};
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    if uid.is_root() {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).map_err(|e| {
        std::io::Error::other(format!("unshare(CLONE_NEWUSER | CLONE_NEWNET): {e}"))
    })?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// Binds `addr` inside `host`'s network namespace, and comes back to this one.
fn bind_on_host(host: &relay_harness::netns::Netns, addr: &Addr) -> Result<Listener, String> {
    let home = std::fs::File::open("/proc/self/ns/net").map_err(|e| e.to_string())?;
    host.enter()
        .map_err(|e| format!("cannot enter the relay's host: {e}"))?;
    let bound = Listener::bind(addr).map_err(|e| e.to_string());
    nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot come back from the relay's host: {e}"))?;
    bound
}

/// The address a foreign relay is told to listen on: the Unix path as chosen, or a TCP port
/// the kernel picks now (and that the relay is expected to take: there is a small window in
/// which another program could).
fn foreign_addr(addr: Addr) -> std::io::Result<Addr> {
    match addr {
        Addr::Tcp(sa) => Ok(Addr::Tcp(std::net::TcpListener::bind(sa)?.local_addr()?)),
        unix => Ok(unix),
    }
}

/// What the supervisor is given: the processes, the faults, the clocks.
fn limits(
    spec: &RunSpec,
    opts: &Options,
    plans: &Plans,
    relay_side: &RelaySide,
    prelude: Vec<(u64, String)>,
) -> Result<Limits, RunError> {
    let n = plans.len();
    let blackbox = if spec.has_deaths() || spec.sending_for().is_some() {
        let b = BlackBox::new(n, spec.traffic_pairs()).map_err(|e| {
            RunError::env(format!(
                "cannot map the shared counters (for --nemesis kill/restart or --duration): {e}"
            ))
        })?;
        Some(Arc::new(b))
    } else {
        None
    };
    Ok(Limits {
        clients: n,
        phases: spec.phases(),
        // (A random run's are c0.., made when needed: a list of 10,000 is memory every fork copies.)
        names: match &spec.traffic {
            crate::spec::Traffic::Script { .. } => spec.names(),
            crate::spec::Traffic::Random { .. } => Vec::new(),
        },
        relay_fds: match relay_side {
            RelaySide::Builtin(l) => vec![l.as_fd().as_raw_fd()],
            RelaySide::Foreign { .. } | RelaySide::Elsewhere => Vec::new(),
        },
        foreign_relay: spec.relay_cmd.is_some(),
        relay_elsewhere: spec.relay_addr.as_ref().map(|a| a.to_string()),
        links: None,
        nemesis: spec.nemesis.as_ref().map(|n| Nemesis {
            kinds: n.kinds.clone(),
            interval: n.interval,
            pause: n.lasting.unwrap_or(n.interval / 2),
            long_partitions: spec.long_partitions(),
            hold_after_cuts: spec.peer_timeout,
            seed: spec.seed,
        }),
        script_faults: spec.script_faults(),
        trace: trace_cap(spec, n),
        trace_prelude: prelude,
        // (Not with --duration: no count to fill the bar up to.)
        progress: (opts.progress && spec.sending_for().is_none()).then(|| plans.expected_total()),
        tally: Tally::new(n).ok().map(Arc::new),
        // (A lossy link can leave TCP waiting out its backoff for seconds: no stall.)
        quiet: spec.quiet.filter(|q| !q.is_zero()).map(|q| {
            if spec.links.needs_netem() {
                q.max(Duration::from_secs(10))
            } else {
                q
            }
        }),
        blackbox,
        deadline: spec.deadline(),
        setup: spec.setup_bound(),
        grace: Duration::from_secs(2),
    })
}

/// `--trace`: events kept per process.
fn trace_cap(spec: &RunSpec, clients: usize) -> Option<usize> {
    spec.trace
        .then(|| relay_harness::trace::cap_for(clients + 2))
}

/// Forks the relay and the clients under the supervisor, and waits for the run to end.
///
/// # Safety
/// The process must be single-threaded (`supervise`'s contract).
unsafe fn supervise_run(
    spec: &RunSpec,
    limits: &Limits,
    signals: &Signals,
    relay_side: RelaySide,
    // Where the clients connect, and (--hosts) each client's host.
    (addr, client_hosts): (&Addr, Option<&[PathBuf]>),
    plans: &Plans,
    on: &mut dyn FnMut(Milestone),
) -> Result<Outcome, RunError> {
    let relay_cfg = relay::Config {
        backend: spec.backend.name().to_string(),
        log: false,
        max_clients: plans.len() + 16,
        inject: spec.inject.map(|i| Inject {
            seed: spec.seed,
            ..i
        }),
        // The relay is the middle of every story: it keeps more.
        trace: trace_cap(spec, plans.len()).map(|c| c * 4),
        spin: spec.relay_spin,
        max_buffer: spec.relay_max_buffer(),
        peer_timeout: spec.peer_timeout,
        ..relay::Config::default()
    };
    // A foreign relay listens when it is ready; ours already does when the clients start, and
    // one elsewhere should (a second covers a burst of connections it has not accepted yet).
    let connect_wait = if spec.relay_cmd.is_some() {
        FOREIGN_LISTEN_WAIT.min(spec.deadline() / 2)
    } else if spec.relay_addr.is_some() {
        ELSEWHERE_LISTEN_WAIT
    } else {
        Duration::ZERO
    };
    let (write_chunks, duration) = (spec.write_chunks, spec.sending_for());
    // SAFETY: single-threaded (this function's contract); the closures start no thread.
    let outcome = unsafe {
        supervise(
            limits,
            signals,
            move |ctx| match relay_side {
                RelaySide::Builtin(listener) => builtin_relay(ctx, listener, relay_cfg),
                RelaySide::Foreign { command, log } => exec_relay(&ctx, &command, &log),
                // (Never forked: `Limits::relay_elsewhere` says so.)
                RelaySide::Elsewhere => exit::ENV,
            },
            |ctx| {
                let Some(plan) = plans.get(ctx.index) else {
                    return exit::ENV;
                };
                // --hosts: into its host's network before it makes a socket.
                if let Some(host) = client_hosts.and_then(|h| h.get(ctx.index)) {
                    if let Err(e) = relay_harness::netns::enter(host) {
                        eprintln!("relay-sim: c{} cannot enter its host: {e}", ctx.index);
                        return exit::ENV;
                    }
                }
                crate::driver::client_main(addr, &plan, write_chunks, connect_wait, duration, ctx)
            },
            on,
        )
    };
    outcome.map_err(|e| RunError::env(e.to_string()))
}

/// In the relay's child: runs the built-in relay until the supervisor closes its stop pipe,
/// then tells what it did.
fn builtin_relay(mut ctx: RelayCtx, listener: Listener, cfg: relay::Config) -> i32 {
    let (mut injected, mut held_back_ms, mut peer_timeouts, mut trace) = (0, 0, 0, None);
    let code = match ctx
        .stop
        .try_clone()
        .map(|s| relay::run(listener, Some(s), cfg))
    {
        Ok(Ok(stats)) => {
            injected = stats.injected;
            held_back_ms = stats.held_back_ns / 1_000_000;
            peer_timeouts = stats.peer_timeouts;
            trace = stats.trace;
            exit::OK
        }
        Ok(Err(e)) => {
            eprintln!("relay-sim relay: {e}");
            exit::ENV
        }
        Err(e) => {
            eprintln!("relay-sim relay: {e}");
            exit::ENV
        }
    };
    let _ = ctx.done((injected, held_back_ms, peer_timeouts), trace);
    code
}

/// In the relay's child: becomes `sh -c COMMAND`, with stdout and stderr in `log`. Returns
/// only if that fails.
fn exec_relay(ctx: &RelayCtx, command: &str, log: &Path) -> i32 {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let file = match std::fs::File::create(log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "relay-sim: cannot create the relay log {}: {e}",
                log.display()
            );
            return exit::ENV;
        }
    };
    if let Err(e) = ctx.keep_events_across_exec() {
        eprintln!("relay-sim: {e}");
        return exit::ENV;
    }
    let (Ok(out), Ok(err)) = (file.try_clone(), file.try_clone()) else {
        return exit::ENV;
    };
    let e = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .exec();
    let _ = writeln!(&file, "relay-sim: cannot run sh -c {command:?}: {e}");
    exit::CANNOT_EXEC
}

/// Checks every client's records against the plans (and, in runs with deaths, the shared
/// counters).
fn verify_run(spec: &RunSpec, limits: &Limits, plans: &Plans, outcome: &Outcome) -> Verification {
    let names = Names::given(
        plans.names().map(|n| n.all().to_vec()).unwrap_or_default(),
        plans.len(),
    );
    let min_payload = match &spec.traffic {
        crate::spec::Traffic::Random { payload, .. } => payload.min,
        // (What the CLI's --payload default gave a script before there was a spec; a script's
        // own smallest payload would allow more loss when its relay is killed.)
        crate::spec::Traffic::Script { .. } => 64,
    };
    verify_with(
        &names,
        &outcome.reports,
        &Deaths {
            blackbox: limits.blackbox.as_deref(),
            relay_killed: matches!(outcome.ending, Ending::RelayKilled(_)),
            interrupted: matches!(outcome.ending, Ending::Interrupted(_)),
            in_flight_cap: in_flight_cap(
                spec.transport == Transport::Tcp,
                // Another relay's buffering is unknown: assume 1 MiB per receiver.
                if spec.relay_cmd.is_some() || spec.relay_addr.is_some() {
                    1 << 20
                } else {
                    spec.relay_max_buffer()
                },
                min_payload,
            ),
        },
    )
}

/// Most messages one death can take with it on one pair: a client's unwritten batch, the
/// relay's output buffer for the receiver, the kernel's socket buffers on both sides and the
/// receiver's read chunk, in the smallest frames of the run.
fn in_flight_cap(tcp: bool, max_buffer: usize, min_payload: usize) -> u64 {
    let read = |p: &str, field: usize, dflt: u64| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.split_whitespace().nth(field)?.parse().ok())
            .unwrap_or(dflt)
    };
    let kernel = if tcp {
        read("/proc/sys/net/ipv4/tcp_wmem", 2, 4 << 20)
            + read("/proc/sys/net/ipv4/tcp_rmem", 2, 6 << 20)
    } else {
        2 * read("/proc/sys/net/core/wmem_default", 0, 212_992)
    };
    let bytes = crate::driver::BATCH as u64 + max_buffer as u64 + kernel + (64 << 10);
    bytes / (min_payload as u64 + 6)
}
