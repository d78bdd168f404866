//! `relay-sim [run]`: fork the relay and N clients, verify every message, report.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use relay_harness::blackbox::{self, BlackBox};
use relay_harness::janitor;
use relay_harness::payload::PayloadSize;
use relay_harness::payload::Sizes;
use relay_harness::plan::{pingpong_plans, random_plans, script_plans, ClientPlan, Names};
use relay_harness::report::{self, signal_name, RunConfig};
use relay_harness::scenario::{client_name, fresh_seed, Scenario};
use relay_harness::script::Script;
use relay_harness::supervisor::{supervise, Action, Ending, Limits, Milestone, Nemesis, Signals};
use relay_harness::verify::{verify_with, Deaths};
use relay_trace::now_ns;

use crate::protocol::DEFAULT_MAX_FRAME;
use crate::relay::inject::Inject;
use crate::relay::{self, backend, Spin};
use crate::sys::{self, Addr, Listener};
use relay_harness::exit;

/// Flags of `relay-sim run` (also accepted with no subcommand).
#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Number of client processes, named c0..c{N-1}.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub clients: usize,
    /// Messages each client sends (the total is N times this).
    #[arg(long, value_name = "M", default_value_t = 1000)]
    pub msgs: u64,
    /// Send for this long (e.g. 30s, 10m) instead of --msgs, then verify: a soak in one
    /// command. End markers account for every message, as in runs with deaths.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, conflicts_with_all = ["msgs", "scenario"])]
    pub duration: Option<Duration>,
    /// Seed for destinations, sizes and payload bytes (default: a fresh one, always printed).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Payload bytes: SIZE, or MIN..MAX for sizes drawn uniformly between them.
    #[arg(long, value_name = "SIZE|MIN..MAX", default_value = "64", value_parser = PayloadSize::parse)]
    pub payload: PayloadSize,
    /// How clients reach the relay: a Unix socket in a fresh temporary directory, or TCP on
    /// 127.0.0.1 with a port the kernel picks.
    #[arg(long, value_name = "unix|tcp", default_value = "unix", value_parser = ["unix", "tcp"])]
    pub transport: String,
    /// The relay's readiness backend.
    #[arg(long, value_name = "NAME", default_value = "select", value_parser = clap::builder::PossibleValuesParser::new(backend::NAMES))]
    pub backend: String,
    /// End a stuck run after this long (e.g. 30s, 2m); default scales with the work, at least 10s.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// The quiet rule: once every client has written all it had to send, a run in which
    /// nothing arrives anywhere for this long ends at once as stalled, and fails with what is
    /// missing (instead of waiting out --timeout). Paused while a nemesis or script fault
    /// holds a process back; `off` leaves only --timeout.
    #[arg(long, value_name = "DUR|off", default_value = "1s", value_parser = parse_quiet)]
    pub quiet_period: Duration,
    /// Run a scripted scenario (docs/scenarios.md) instead of random traffic; --clients,
    /// --msgs and --payload then come from the script.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<std::path::PathBuf>,
    /// Print the report as one JSON document (docs/report.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write DIR/report.json, DIR/report.txt and DIR/junit.xml (one test case per check),
    /// for a CI job to archive. DIR is created if needed.
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// Narrate on stderr: every fork (with pids), the barrier, each report, each exit.
    #[arg(long, short)]
    pub verbose: bool,
    /// Clients cap each write() at a seeded random size in MIN..MAX bytes, so frames are split
    /// across writes and several share one (exercises the relay's reassembly).
    #[arg(long, value_name = "MIN..MAX", value_parser = PayloadSize::parse)]
    pub write_chunks: Option<PayloadSize>,
    /// Traffic pattern: `mesh` (each client sends --msgs to random others, as fast as it can) or
    /// `pingpong` (clients in pairs c0-c1, c2-c3, ..., one message in flight per pair, --msgs
    /// round trips; latency is then the round trip).
    #[arg(long, value_name = "mesh|pingpong", default_value = "mesh", value_parser = ["mesh", "pingpong"])]
    pub pattern: String,
    /// Make the relay break a promise on purpose, to show the verifier catches it:
    /// KIND[:RATE], KIND one of drop, duplicate, reorder, corrupt, misroute, spoof, delay
    /// (rate per DELIVER, default 0.01; seeded by --seed). The run is meant to fail.
    #[arg(long, value_name = "KIND[:RATE]", value_parser = Inject::parse)]
    pub inject: Option<Inject>,
    /// Process faults during the run, a comma-separated list: every --nemesis-interval one of
    /// them (drawn with --seed) strikes a random client. `stop`: SIGSTOP for half the interval,
    /// then SIGCONT (a slow consumer; nothing may be lost). `kill`: SIGKILL for good.
    /// `restart`: SIGKILL, and half an interval later a new process under the same name carries
    /// on. `relay`: SIGKILL the relay (the run ends there). It rests in the second half of
    /// --timeout. docs/guarantees.md says what is checked under each.
    #[arg(long, value_name = "stop,kill,restart,relay", value_parser = parse_nemesis)]
    pub nemesis: Option<String>,
    /// Time between two nemesis actions.
    #[arg(long, value_name = "DUR", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub nemesis_interval: Duration,
    /// Output the built-in relay queues for one receiver before it holds that receiver's senders
    /// back (bytes; K, M suffixes allowed; default 64KiB; see `relay-sim relay --max-buffer`).
    #[arg(long, value_name = "BYTES", value_parser = super::parse_buffer)]
    pub max_buffer: Option<usize>,
    /// When the built-in relay keeps polling after activity before it blocks (auto, off, or
    /// a duration; see `relay-sim relay --spin`).
    #[arg(long, value_name = "auto|off|DUR", default_value = "auto", value_parser = Spin::parse)]
    pub relay_spin: Spin,
    /// Record what every process does (forks, pipe ends, socket calls, each select() and each
    /// frame routed, exits) and print the merged timeline; large runs keep the first events of
    /// each process and say what was cut.
    #[arg(long)]
    pub trace: bool,
    /// Run another relay program instead of the built-in one: `sh -c CMD`, with `{addr}`
    /// replaced by the socket path or 127.0.0.1:PORT it must listen on. Its output goes to
    /// relay.log (in --report DIR when given); it is stopped with SIGTERM, then SIGKILL.
    #[arg(long, value_name = "CMD")]
    pub relay_cmd: Option<String>,
    /// A script given as text (name, text), for `demo`.
    #[arg(skip)]
    pub inline_script: Option<(String, String)>,
}

impl Args {
    /// The built-in relay's output bound: `--max-buffer`, or its default.
    fn relay_max_buffer(&self) -> usize {
        self.max_buffer.unwrap_or(relay::DEFAULT_MAX_BUFFER)
    }
}

/// `--quiet-period`: a duration, or `off` (zero).
fn parse_quiet(s: &str) -> Result<Duration, String> {
    if s == "off" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e}; give e.g. 1s, 500ms or off"))
}

fn parse_nemesis(s: &str) -> Result<String, String> {
    nemesis_kinds(s).map(|_| s.to_string())
}

/// The actions of a `--nemesis` list.
fn nemesis_kinds(s: &str) -> Result<Vec<Action>, String> {
    let mut kinds = Vec::new();
    for w in s.split(',').map(str::trim) {
        let a = match w {
            "stop" => Action::Stop,
            "kill" => Action::Kill,
            "restart" => Action::Restart,
            "relay" => Action::Relay,
            _ => {
                return Err(format!(
                    "unknown nemesis {w:?}: use stop, kill, restart or relay, comma-separated"
                ))
            }
        };
        if !kinds.contains(&a) {
            kinds.push(a);
        }
    }
    Ok(kinds)
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

/// Longest client name (`c` and up to 5 digits) plus the SEND overhead must fit a frame.
const MAX_PAYLOAD: usize = DEFAULT_MAX_FRAME as usize - 2 - 32;
/// Clients a select() relay can hold next to its own fds, below FD_SETSIZE.
const MAX_CLIENTS_SELECT: usize = 1000;
/// Clients with poll or epoll (each is a process, with a pipe to the supervisor).
const MAX_CLIENTS: usize = 8000;

fn max_clients(backend: &str) -> usize {
    if backend == "select" {
        MAX_CLIENTS_SELECT
    } else {
        MAX_CLIENTS
    }
}

/// A `--timeout` value that reads back as the same duration (one word, shell-safe).
fn timeout_flag(t: Duration) -> String {
    if t.subsec_millis() == 0 && t.subsec_nanos() == 0 {
        format!("{}s", t.as_secs())
    } else {
        format!("{}ms", t.as_millis().max(1))
    }
}

/// The default deadline: 10 s, plus time for the volume of work at a pessimistic rate.
fn default_timeout(sc: &Scenario) -> Duration {
    let msgs = sc.total() as f64;
    let bytes = msgs * (sc.payload.min + sc.payload.max) as f64 / 2.0;
    Duration::from_secs_f64((10.0 + msgs / 100_000.0 + bytes / 50e6).ceil())
}

/// One stderr line per milestone, for `-v`.
fn narrate(m: &Milestone) {
    match m {
        Milestone::Forked { role, pid } => eprintln!("relay-sim: forked {role} (pid {pid})"),
        Milestone::Registered { role } => eprintln!("relay-sim: {role} registered"),
        Milestone::Released => eprintln!("relay-sim: every client registered; barrier released"),
        Milestone::PhaseStarted(p) => eprintln!("relay-sim: phase {p} started"),
        Milestone::Reported { role } => eprintln!("relay-sim: {role} reported"),
        Milestone::Stopping(e) => eprintln!("relay-sim: stopping early: {e:?}"),
        Milestone::Nemesis { role, action } => {
            eprintln!("relay-sim: nemesis: {}", nemesis_words(*action, role))
        }
        Milestone::Exited { role, status } => eprintln!("relay-sim: {role} {status}"),
    }
}

/// Runs the harness; returns the exit code.
pub fn run(a: Args) -> i32 {
    run_narrated(a, false)
}

/// What a run is made of: a random scenario or a script.
struct Source {
    plans: Vec<ClientPlan>,
    /// A script's fault lines.
    faults: Vec<relay_harness::script::FaultLine>,
    names: Vec<String>,
    phases: usize,
    config: RunConfig,
    timeout: Duration,
    replay: String,
}

fn source(a: &Args) -> Result<Source, (i32, String)> {
    let usage = |m: String| (exit::USAGE, m);
    let seed_given = a.seed;
    let script = match (&a.inline_script, &a.scenario) {
        (Some((name, text)), _) => {
            Some((std::path::PathBuf::from(name), Script::parse(name, text)))
        }
        (None, Some(path)) => Some((path.clone(), Script::load(path))),
        (None, None) => None,
    };
    if let Some((path, script)) = script {
        let path = &path;
        let script = script.map_err(|e| usage(e.to_string()))?;
        if script.max_payload() > MAX_PAYLOAD {
            return Err(usage(format!(
                "{}: a payload of {} bytes does not fit a {DEFAULT_MAX_FRAME}-byte frame (at most {MAX_PAYLOAD})",
                path.display(),
                script.max_payload()
            )));
        }
        let most = max_clients(&a.backend);
        if script.clients > most {
            return Err(usage(format!(
                "{}: at most {most} clients with --backend {}",
                path.display(),
                a.backend
            )));
        }
        let seed = seed_given.or(script.seed).unwrap_or_else(fresh_seed);
        let plans = script_plans(&script, seed);
        let total = script.total();
        let timeout = a.timeout.unwrap_or_else(|| {
            Duration::from_secs_f64(
                10.0 + total as f64 / 100_000.0
                    + (total as f64 * script.max_payload() as f64) / 50e6,
            )
        });
        let replay = format!(
            "relay-sim run --scenario {} --seed {seed} --transport {} --backend {} --timeout {}",
            path.display(),
            a.transport,
            a.backend,
            timeout_flag(timeout)
        );
        let config = RunConfig {
            clients: script.clients,
            msgs_per_client: total / script.clients.max(1) as u64,
            total_msgs: total,
            payload: "scripted".into(),
            transport: a.transport.clone(),
            backend: a.backend.clone(),
            relay_spin: a.relay_spin.to_string(),
            relay_max_buffer: Some(a.relay_max_buffer()),
            seed,
            timeout_s: timeout.as_secs_f64(),
            scenario: Some(path.display().to_string()),
            phases: script.phases.len(),
            inject: None,
            relay_cmd: None,
            nemesis: (!script.faults.is_empty())
                .then(|| format!("{} fault line(s) in the script", script.faults.len())),
            pattern: "script".into(),
            sizes: script.sizes(),
            duration_s: None,
        };
        return Ok(Source {
            plans,
            faults: script.faults.clone(),
            names: script.names[..script.clients].to_vec(),
            phases: script.phases.len(),
            config,
            timeout,
            replay,
        });
    }
    let most = max_clients(&a.backend);
    if a.clients == 0 || a.clients > most {
        return Err(usage(format!(
            "--clients {}: must be 1..={most} with --backend {} (select cannot watch fds past 1023; \
             poll and epoll can)",
            a.clients, a.backend
        )));
    }
    if a.payload.max > MAX_PAYLOAD {
        return Err(usage(format!(
            "--payload {}: at most {MAX_PAYLOAD} bytes fit in a {DEFAULT_MAX_FRAME}-byte frame",
            a.payload
        )));
    }
    let sc = Scenario {
        clients: a.clients,
        // --duration: no count; the clock ends the sending.
        msgs: if a.duration.is_some() {
            u64::MAX
        } else {
            a.msgs
        },
        payload: a.payload,
        seed: seed_given.unwrap_or_else(fresh_seed),
    };
    let timeout = a.timeout.unwrap_or_else(|| match a.duration {
        // The sending, then as long again (at least 10 s) for the end markers and the reports.
        Some(d) => d + d.max(Duration::from_secs(10)),
        None => default_timeout(&sc),
    });
    let how_much = match a.duration {
        Some(d) => format!("--duration {}", timeout_flag(d)),
        None => format!("--msgs {}", sc.msgs),
    };
    let replay = format!(
        "relay-sim run --clients {} {how_much} --seed {} --payload {} --transport {} --backend {} --timeout {}",
        sc.clients,
        sc.seed,
        sc.payload,
        a.transport,
        a.backend,
        timeout_flag(timeout)
    );
    let config = RunConfig {
        clients: sc.clients,
        // With --duration, what was sent: filled in after the run.
        msgs_per_client: if a.duration.is_some() { 0 } else { sc.msgs },
        total_msgs: if a.duration.is_some() { 0 } else { sc.total() },
        duration_s: a.duration.map(|d| d.as_secs_f64()),
        payload: sc.payload.to_string(),
        transport: a.transport.clone(),
        backend: a.backend.clone(),
        relay_spin: a.relay_spin.to_string(),
        relay_max_buffer: Some(a.relay_max_buffer()),
        seed: sc.seed,
        timeout_s: timeout.as_secs_f64(),
        scenario: None,
        phases: 1,
        inject: None,
        relay_cmd: None,
        nemesis: None,
        pattern: "mesh".into(),
        sizes: Sizes::of(sc.payload),
    };
    if a.pattern == "pingpong" && sc.clients % 2 == 1 {
        return Err(usage(format!(
            "--pattern pingpong: --clients {} must be even (clients pair up)",
            sc.clients
        )));
    }
    let mut config = config;
    config.pattern = a.pattern.clone();
    let replay = if a.pattern == "pingpong" {
        replay + " --pattern pingpong"
    } else {
        replay
    };
    Ok(Source {
        faults: Vec::new(),
        plans: if a.pattern == "pingpong" {
            pingpong_plans(&sc)
        } else {
            random_plans(&sc)
        },
        names: (0..sc.clients).map(client_name).collect(),
        phases: 1,
        config,
        timeout,
        replay,
    })
}

/// What the nemesis did, in a few words.
fn nemesis_words(action: Action, role: &str) -> String {
    match action {
        Action::Stop => format!("SIGSTOP {role}"),
        Action::Cont => format!("SIGCONT {role}"),
        Action::Kill => format!("SIGKILL {role} (for good)"),
        Action::Restart => format!("SIGKILL {role} (it will restart)"),
        Action::Restarted => format!("{role} restarted"),
        Action::Relay => "SIGKILL the relay".to_string(),
    }
}

/// Why a run that needs end markers and the shared counters (`flag`: kill/restart or
/// --duration) cannot have them, if it cannot: a receiver must tell each payload's sender from
/// the payload (`why_ident` says why), and the counter table has clients² entries.
fn shared_counters_refused(
    a: &Args,
    clients: usize,
    flag: &str,
    why_ident: &str,
) -> Option<String> {
    if a.scenario.is_some() || a.inline_script.is_some() {
        Some(format!(
            "{flag} works on random runs; scripts use `kill NAME` lines"
        ))
    } else if a.pattern != "mesh" {
        Some(format!("{flag} needs --pattern mesh"))
    } else if a.payload.min < relay_harness::payload::IDENT {
        Some(format!(
            "{flag} needs payloads of at least {} bytes (--payload), {why_ident}",
            relay_harness::payload::IDENT
        ))
    } else if clients > blackbox::MAX_CLIENTS {
        Some(format!(
            "{flag} supports up to {} clients",
            blackbox::MAX_CLIENTS
        ))
    } else {
        None
    }
}

/// Runs the harness; with `demo`, keeps transcripts and tells the story before the report.
pub fn run_narrated(a: Args, demo: bool) -> i32 {
    // First of all: from here on SIGINT and SIGTERM end the run through its cleanup (nothing of
    // it exists yet), never outright with a directory or a socket left behind.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("relay-sim: cannot install the SIGINT/SIGTERM handlers: {e}");
            return exit::ENV;
        }
    };
    if a.relay_cmd.is_some() && a.inject.is_some() {
        eprintln!("relay-sim: --inject needs the built-in relay: another program cannot be told to break its promises");
        return exit::USAGE;
    }
    if a.relay_cmd.is_some() && a.max_buffer.is_some() {
        eprintln!("relay-sim: --max-buffer sets the built-in relay's bound; give your relay its own in --relay-cmd");
        return exit::USAGE;
    }
    let mut src = match source(&a) {
        Ok(s) => s,
        Err((code, msg)) => {
            eprintln!("relay-sim: {msg}");
            return code;
        }
    };
    let kinds = match a.nemesis.as_deref().map(nemesis_kinds).transpose() {
        Ok(k) => k.unwrap_or_default(),
        Err(e) => {
            eprintln!("relay-sim: --nemesis: {e}");
            return exit::USAGE;
        }
    };
    let deaths = kinds
        .iter()
        .any(|k| matches!(k, Action::Kill | Action::Restart));
    // Both end with the drain of end markers over the shared counters (harness/src/blackbox.rs).
    let needs = [
        (
            deaths,
            "--nemesis kill/restart",
            "to tell who sent each one",
        ),
        (
            a.duration.is_some(),
            "--duration",
            "so none can pass for an end marker",
        ),
    ];
    for (wanted, flag, why_ident) in needs {
        if let Some(why) = wanted
            .then(|| shared_counters_refused(&a, src.plans.len(), flag, why_ident))
            .flatten()
        {
            eprintln!("relay-sim: {why}");
            return exit::USAGE;
        }
    }
    for p in &mut src.plans {
        p.transcript = demo;
    }
    if !a.json && !demo {
        // The seed first, so even a run that never ends can be replayed.
        let how_much = match a.duration {
            Some(d) => format!("sending for {}", timeout_flag(d)),
            None => format!("{} messages", src.config.total_msgs),
        };
        println!(
            "relay-sim: starting {} clients, {how_much}, seed {}",
            src.config.clients, src.config.seed
        );
        let _ = std::io::stdout().flush();
    }
    if let Some(sig) = signals.caught() {
        // Before anything was made: nothing to clean up, but say so, with the seed.
        eprintln!(
            "relay-sim: interrupted by {} before the run started (seed {}); nothing was left behind",
            signal_name(sig),
            src.config.seed
        );
        return exit::interrupted(sig);
    }

    // A SIGKILL gives us no chance to clean up: the janitor, forked first (single-threaded
    // here, as at every fork), removes what the run made if we die without saying "done".
    if let Err(e) = janitor::start() {
        eprintln!(
            "relay-sim: cannot start the cleanup process: {e}; check the process limit (ulimit -u)"
        );
        return exit::ENV;
    }
    let _janitor = janitor::Done; // dropped last: after `dir`, on every return
    if let (true, Some(pid)) = (a.verbose, janitor::pid()) {
        eprintln!(
            "relay-sim: started the janitor, which cleans up if relay-sim is SIGKILLed (pid {pid})"
        );
    }
    // The socket lives in a fresh private directory, removed on every path when `dir` drops.
    let dir = match tempfile::Builder::new().prefix("relay-sim-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("relay-sim: cannot create a temporary directory: {e}; check TMPDIR");
            return exit::ENV;
        }
    };
    janitor::dir(dir.path());
    let addr = match a.transport.as_str() {
        "tcp" => Addr::Tcp("127.0.0.1:0".parse().expect("a literal socket address")),
        _ => Addr::Unix(dir.path().join("relay.sock")),
    };
    let _ = sys::raise_nofile_limit();
    let mut prelude: Vec<(u64, String)> = Vec::new();
    let (relay_side, addr) = match &a.relay_cmd {
        None => {
            // Bound before the forks: clients may connect the moment they exist.
            let mut listener = match Listener::bind(&addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("relay-sim: {e}");
                    return exit::ENV;
                }
            };
            // The supervisor removes the directory; no process removes the file on its own drop.
            listener.keep_file();
            if a.trace {
                let fd = listener.as_fd().as_raw_fd();
                prelude.push((
                    now_ns(),
                    format!("socket(), bind({addr}), listen() -> fd {fd}: the relay's listening socket, made before any fork so clients can connect as soon as they exist"),
                ));
            }
            match listener.local_addr() {
                Ok(bound) => (RelaySide::Builtin(listener), bound),
                Err(e) => {
                    eprintln!("relay-sim: cannot read the relay's address: {e}");
                    return exit::ENV;
                }
            }
        }
        Some(cmd) => {
            let addr = match foreign_addr(addr) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("relay-sim: cannot find a free port for the relay: {e}");
                    return exit::ENV;
                }
            };
            let log = match &a.report {
                Some(folder) => {
                    let _ = std::fs::create_dir_all(folder);
                    folder.join("relay.log")
                }
                None => dir.path().join("relay.log"),
            };
            let addr_text = match &addr {
                Addr::Unix(p) => p.display().to_string(),
                Addr::Tcp(sa) => sa.to_string(),
            };
            let command = cmd.replace("{addr}", &addr_text);
            (RelaySide::Foreign { command, log }, addr)
        }
    };
    let trace_cap = a
        .trace
        .then(|| relay_harness::trace::cap_for(src.plans.len() + 2));
    let relay_cfg = relay::Config {
        backend: a.backend.clone(),
        log: false,
        max_clients: src.plans.len() + 16,
        inject: a.inject.map(|i| Inject {
            seed: src.config.seed,
            ..i
        }),
        // The relay is the middle of every story: it keeps more.
        trace: trace_cap.map(|c| c * 4),
        spin: a.relay_spin,
        max_buffer: a.relay_max_buffer(),
        ..relay::Config::default()
    };
    let relay_log = match &relay_side {
        RelaySide::Foreign { log, .. } => Some(log.clone()),
        RelaySide::Builtin(_) => None,
    };
    let limits = Limits {
        clients: src.plans.len(),
        phases: src.phases,
        names: src.names.clone(),
        relay_fds: match &relay_side {
            RelaySide::Builtin(l) => vec![l.as_fd().as_raw_fd()],
            RelaySide::Foreign { .. } => Vec::new(),
        },
        foreign_relay: a.relay_cmd.is_some(),
        nemesis: a.nemesis.as_ref().map(|_| Nemesis {
            kinds: kinds.clone(),
            interval: a.nemesis_interval,
            pause: a.nemesis_interval / 2,
            seed: src.config.seed,
        }),
        script_faults: src.faults.clone(),
        trace: trace_cap,
        trace_prelude: prelude,
        // Only for a person watching: not with --json, not into a pipe or a CI log.
        // (Not with --duration: no count to fill the bar up to.)
        progress: (!a.json
            && !demo
            && a.duration.is_none()
            && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| {
            src.plans
                .iter()
                .map(|p| p.expect_in.last().copied().unwrap_or(0))
                .sum()
        }),
        tally: relay_harness::blackbox::Tally::new(src.plans.len())
            .ok()
            .map(std::sync::Arc::new),
        quiet: (!a.quiet_period.is_zero()).then_some(a.quiet_period),
        blackbox: if deaths || a.duration.is_some() {
            match BlackBox::new(src.plans.len()) {
                Ok(b) => Some(std::sync::Arc::new(b)),
                Err(e) => {
                    eprintln!("relay-sim: cannot map the shared counters (for --nemesis kill/restart or --duration): {e}");
                    return exit::ENV;
                }
            }
        } else {
            None
        },
        deadline: src.timeout,
        grace: Duration::from_secs(2),
    };
    let mut story: Vec<(u64, String)> = Vec::new();
    let plans = &src.plans;
    // A foreign relay listens when it is ready; ours already does when the clients start.
    let connect_wait = if a.relay_cmd.is_some() {
        FOREIGN_LISTEN_WAIT.min(src.timeout / 2)
    } else {
        Duration::ZERO
    };
    if let Some(cmd) = &a.relay_cmd {
        src.replay
            .push_str(&format!(" --relay-cmd '{}'", cmd.replace('\'', "'\\''")));
        src.config.backend = "foreign".into();
        src.config.relay_spin = "foreign".into();
        src.config.relay_max_buffer = None;
        src.config.relay_cmd = Some(cmd.clone());
    }
    if let Some(c) = a.write_chunks {
        src.replay
            .push_str(&format!(" --write-chunks {}..{}", c.min, c.max));
    }
    if let Some(b) = a.max_buffer {
        src.replay.push_str(&format!(" --max-buffer {b}"));
    }
    if let Some(i) = a.inject {
        src.replay.push_str(&format!(" --inject {i}"));
        src.config.inject = Some(i.to_string());
    }
    if let Some(n) = &a.nemesis {
        let every = timeout_flag(a.nemesis_interval);
        src.replay
            .push_str(&format!(" --nemesis {n} --nemesis-interval {every}"));
        src.config.nemesis = Some(format!("{n} every {every}"));
    }
    // SAFETY: relay-sim starts no thread (the progress bar draws from the supervisor's own
    // loop), and neither the closures nor the milestone callback below starts one.
    let outcome = unsafe {
        supervise(
            &limits,
            &signals,
            move |mut ctx| {
                let listener = match relay_side {
                    RelaySide::Builtin(l) => l,
                    RelaySide::Foreign { command, log } => return exec_relay(&ctx, &command, &log),
                };
                let (mut injected, mut held_back_ms, mut trace) = (0, 0, None);
                let code = match ctx
                    .stop
                    .try_clone()
                    .map(|s| relay::run(listener, Some(s), relay_cfg))
                {
                    Ok(Ok(stats)) => {
                        injected = stats.injected;
                        held_back_ms = stats.held_back_ns / 1_000_000;
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
                let _ = ctx.done(injected, held_back_ms, trace);
                code
            },
            |ctx| {
                let i = ctx.index;
                crate::driver::client_main(
                    &addr,
                    &plans[i],
                    a.write_chunks,
                    connect_wait,
                    a.duration,
                    ctx,
                )
            },
            &mut |m| {
                if a.verbose {
                    narrate(&m);
                }
                if demo {
                    story.push((now_ns(), milestone_story(&m)));
                }
            },
        )
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("relay-sim: {e}");
            return exit::ENV;
        }
    };
    let names = Names::given(
        src.plans
            .first()
            .map(|p| p.names.all().to_vec())
            .unwrap_or_default(),
        src.plans.len(),
    );
    let src_names = src.names.clone();
    let t = Instant::now();
    let v = verify_with(
        &names,
        &outcome.reports,
        &Deaths {
            blackbox: limits.blackbox.as_deref(),
            relay_killed: matches!(outcome.ending, Ending::RelayKilled(_)),
            in_flight_cap: in_flight_cap(
                a.transport == "tcp",
                // Another relay's buffering is unknown (None): assume 1 MiB per receiver.
                src.config.relay_max_buffer.unwrap_or(1 << 20),
                a.payload.min,
            ),
        },
    );
    let verify_time = t.elapsed();
    if a.duration.is_some() {
        // What the clients sent in the time they had.
        src.config.total_msgs = v.totals.sent;
        src.config.msgs_per_client = v.totals.sent / src.config.clients.max(1) as u64;
    }
    let mut r = report::build(
        src.config,
        &src.names,
        src.replay,
        &outcome,
        &v,
        verify_time,
    );
    r.trace = outcome.timeline.clone();
    if let Some(log) = &relay_log {
        // Named only where it is kept: without --report it goes with the run's temp dir.
        r.relay_log = a.report.as_ref().map(|_| log.display().to_string());
        if r.exit_code != exit::OK {
            r.relay_log_tail = std::fs::read_to_string(log).ok().map(|t| {
                let lines: Vec<&str> = t.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            });
        }
    }
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    if demo {
        for (i, rep) in outcome.reports.iter().enumerate() {
            if let Some(rep) = rep {
                story.extend(
                    rep.transcript
                        .iter()
                        .map(|(t, what)| (*t, format!("{} {what}", src.names[i]))),
                );
            }
        }
        text.push_str(&tell(story));
    }
    if let (Some(t), false) = (&outcome.timeline, a.json) {
        text.push_str(&t.render());
        text.push('\n');
    }
    text.push_str(&if a.json {
        serde_json::to_string_pretty(&r).unwrap_or_default() + "\n"
    } else {
        report::human(&r)
    });
    // A closed stdout (a pager that quit) is not an error worth a message.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    drop(dir);
    if let Some(folder) = &a.report {
        if let Err(e) = write_report_dir(folder, &r, &outcome, &v, &src_names) {
            eprintln!("relay-sim: --report {}: {e}", folder.display());
            return exit::ENV;
        }
    }
    if let (Some(sig), false) = (signals.caught(), r.ending == "interrupted") {
        // It came after the run, while it was verified and reported: the report stands, and
        // the exit code still says a signal asked us to stop.
        eprintln!(
            "relay-sim: interrupted by {} after the run (its report is above)",
            signal_name(sig)
        );
        return exit::interrupted(sig);
    }
    r.exit_code
}

/// How long clients keep trying to reach a foreign relay that is not listening yet.
const FOREIGN_LISTEN_WAIT: Duration = Duration::from_secs(10);

/// The relay of a run: ours (its listener bound before the forks), or another program.
enum RelaySide {
    Builtin(Listener),
    Foreign {
        command: String,
        log: std::path::PathBuf,
    },
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

/// In the relay's child: becomes `sh -c COMMAND`, with stdout and stderr in `log`. Returns
/// only if that fails.
fn exec_relay(
    ctx: &relay_harness::supervisor::RelayCtx,
    command: &str,
    log: &std::path::Path,
) -> i32 {
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

/// The results folder: the same report three ways.
/// The results folder: the reports, the pictures and index.html.
fn write_report_dir(
    folder: &std::path::Path,
    r: &report::Report,
    outcome: &relay_harness::supervisor::Outcome,
    v: &relay_harness::verify::Verification,
    names: &[String],
) -> std::io::Result<()> {
    use relay_harness::plots;
    std::fs::create_dir_all(folder)?;
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(folder.join("report.json"), json + "\n")?;
    std::fs::write(folder.join("report.txt"), report::human(r))?;
    std::fs::write(folder.join("junit.xml"), report::junit(r))?;
    let what = if r.config.pattern == "pingpong" {
        "round trip"
    } else {
        "send to delivery"
    };
    std::fs::write(
        folder.join("latency.svg"),
        plots::latency_svg(
            v.latency.as_ref(),
            &outcome.reports,
            outcome.released_ns,
            what,
        ),
    )?;
    std::fs::write(
        folder.join("rate.svg"),
        plots::rate_svg(&outcome.reports, names, outcome.released_ns),
    )?;
    let mut pictures = vec![
        ("latency.svg", "Latency"),
        ("rate.svg", "Messages per second"),
    ];
    if let Some(t) = &r.trace {
        std::fs::write(folder.join("trace.txt"), t.render())?;
        if let Some(svg) = plots::sequence_svg(t, 40) {
            std::fs::write(folder.join("sequence.svg"), svg)?;
            pictures.insert(0, ("sequence.svg", "Sequence diagram (traced)"));
        }
    }
    std::fs::write(
        folder.join("index.html"),
        report::html(r, &pictures, r.trace.is_some()),
    )?;
    Ok(())
}

/// A milestone as a sentence of the demo's story.
fn milestone_story(m: &Milestone) -> String {
    match m {
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
            "supervisor: everyone registered; closes the barrier pipe, and all start at once".into()
        }
        Milestone::PhaseStarted(p) => {
            format!("supervisor: every client finished; phase {p} starts")
        }
        Milestone::Reported { role } => {
            format!("{role} is done: sends its records up its event pipe and exits")
        }
        Milestone::Stopping(e) => format!("supervisor: stopping early: {e:?}"),
        Milestone::Nemesis { role, action } => {
            format!("nemesis: {}", nemesis_words(*action, role))
        }
        Milestone::Exited { role, status } => format!("supervisor reaped {role}: {status}"),
    }
}

/// The story, in time order, with times from the first event.
fn tell(mut story: Vec<(u64, String)>) -> String {
    story.sort_by_key(|(t, _)| *t);
    let t0 = story.first().map_or(0, |(t, _)| *t);
    let mut o = String::from("What happened, in time order:\n");
    for (t, what) in story {
        o.push_str(&format!(
            "  {:>9.3} ms  {what}\n",
            (t.saturating_sub(t0)) as f64 / 1e6
        ));
    }
    o.push('\n');
    o
}
