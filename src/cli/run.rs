//! `relay-sim [run]`: fork the relay and N clients, verify every message, report.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;
use relay_harness::exit;
use relay_harness::payload::PayloadSize;
use relay_harness::report::{self, signal_name};
use relay_harness::scenario::fresh_seed;
use relay_harness::script::Script;
use relay_harness::supervisor::{Milestone, Signals};
use relay_trace::now_ns;

use crate::relay::inject::Inject;
use crate::relay::Spin;
use crate::run::Options;
use crate::spec::{
    nemesis_kinds, Amount, Backend, NemesisKinds, NemesisSpec, Pattern, RunError, RunSpec, Traffic,
    Transport,
};

/// Flags of `relay-sim run` (also accepted with no subcommand).
#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Number of client processes, named c0..c{N-1}: up to 1,000 with select (FD_SETSIZE);
    /// with poll and epoll, as many as the open-file, process and pid limits allow (a run
    /// raises its soft open-file limit to the hard one; 10,000 pass in under 15 s).
    #[arg(long, value_name = "N", default_value_t = 8, allow_hyphen_values = true, value_parser = parse_clients)]
    pub clients: usize,
    /// Messages each client sends (the total is N times this).
    #[arg(long, value_name = "M", default_value_t = 1000, allow_hyphen_values = true, value_parser = parse_msgs)]
    pub msgs: u64,
    /// Send for this long (e.g. 30s, 10m) instead of --msgs, then verify: a soak in one
    /// command. End markers account for every message, as in runs with deaths.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, conflicts_with_all = ["msgs", "scenario"])]
    pub duration: Option<Duration>,
    /// Seed for destinations, sizes and payload bytes (default: a fresh one, always printed).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Payload bytes: SIZE, or MIN..MAX for seeded sizes in that range: uniform, except that one
    /// message in 16 is MIN and one in 16 is MAX, so both edges always occur.
    #[arg(long, value_name = "SIZE|MIN..MAX", default_value = "64", value_parser = PayloadSize::parse)]
    pub payload: PayloadSize,
    /// How clients reach the relay.
    #[arg(long, value_name = "unix|tcp", value_enum, default_value_t = Transport::Unix)]
    pub transport: Transport,
    /// The relay's readiness backend.
    #[arg(long, value_name = "NAME", value_enum, default_value_t = Backend::Select)]
    pub backend: Backend,
    /// End a stuck run this long after the start barrier (e.g. 30s, 2m); default scales with
    /// the work, at least 10s. Forking and registering the clients has its own bound (10 s
    /// plus 5 ms per client), so a slow set-up never eats the work's time.
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
    /// Also write a results folder for a CI job to archive: report.json, report.txt,
    /// junit.xml (one test case per check), latency.svg, rate.svg, index.html (open it in a
    /// browser), and with --trace trace.txt and sequence.svg. DIR is created if needed; an
    /// earlier report's folder is reused (its files replaced), any other non-empty one refused.
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// List every client's row in the report, however many (past 32 clients the table shows a
    /// summary and the rows that stand out; report.txt and the JSON always have them all).
    #[arg(long)]
    pub all_clients: bool,
    /// Narrate on stderr: every fork (with pids), the barrier, each report, each exit.
    #[arg(long, short)]
    pub verbose: bool,
    /// Clients cap each write() at a seeded random size in MIN..MAX bytes, so frames are split
    /// across writes and several share one (exercises the relay's reassembly).
    #[arg(long, value_name = "MIN..MAX", value_parser = PayloadSize::parse)]
    pub write_chunks: Option<PayloadSize>,
    /// Traffic pattern.
    #[arg(long, value_name = "mesh|pingpong", value_enum, default_value_t = Pattern::Mesh)]
    pub pattern: Pattern,
    /// Make the relay break a promise on purpose, to show the verifier catches it:
    /// KIND[:RATE], KIND one of drop, duplicate, reorder, corrupt, misroute, spoof, delay
    /// (rate per DELIVER, default 0.01; seeded by --seed). The run is meant to fail.
    #[arg(long, value_name = "KIND[:RATE]", value_parser = Inject::parse)]
    pub inject: Option<Inject>,
    /// Process faults during the run, a comma-separated list: every --nemesis-interval one of
    /// them (drawn with --seed) strikes a random client. `stop`: SIGSTOP for half the interval,
    /// then SIGCONT (a slow consumer; nothing may be lost). `kill`: SIGKILL for good.
    /// `restart`: SIGKILL, and half an interval later a new process under the same name carries
    /// on. `relay`: SIGKILL the relay (the run ends there). With --hosts: `partition` cuts a
    /// client host off the switch for half the interval, then heals it; `partition-relay` cuts
    /// the relay's host (everyone at once). It rests in the second half of --timeout.
    /// docs/guarantees.md says what is checked under each.
    #[arg(long, value_name = "stop,kill,restart,relay,partition,partition-relay", value_parser = nemesis_kinds)]
    pub nemesis: Option<NemesisKinds>,
    /// Time between two nemesis actions.
    #[arg(long, value_name = "DUR", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub nemesis_interval: Duration,
    /// How long each nemesis stop, death before a restart, or partition lasts (default: half
    /// --nemesis-interval; a stop holds the next action until it is over, a partition until
    /// TCP has had its chance to resend what it dropped; the default --timeout grows by twice
    /// this).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, requires = "nemesis")]
    pub nemesis_for: Option<Duration>,
    /// Output the built-in relay queues for one receiver before it holds that receiver's senders
    /// back (bytes; K, M suffixes allowed; default 64KiB; see `relay-sim relay --max-buffer`).
    #[arg(long, value_name = "BYTES", value_parser = super::parse_buffer)]
    pub max_buffer: Option<usize>,
    /// TCP: the built-in relay closes a connection whose peer stops answering for about this
    /// long (see `relay-sim relay --peer-timeout`); with --nemesis partition, partitions at
    /// least a second longer end the cut-off clients' connections (docs/guarantees.md).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub peer_timeout: Option<Duration>,
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
    /// Test a relay that is already running, on this machine or another: `unix:PATH`, a path,
    /// or HOST:PORT (TCP; --transport follows it). The run starts no relay; its clients connect
    /// there. Faults that need the relay's process (`--nemesis relay`) are refused.
    #[arg(long, value_name = "ADDR", value_parser = crate::sys::Addr::parse, conflicts_with = "relay_cmd")]
    pub relay_addr: Option<crate::sys::Addr>,
    /// Put the relay on a host of its own and spread the clients over N client hosts (round
    /// robin): network namespaces on a private switch, addresses from 198.18.0.0/15, over TCP
    /// (--transport is tcp). Without root, the run makes itself root of a user namespace of
    /// its own first; the machine's network is never touched.
    #[arg(long, value_name = "N")]
    pub hosts: Option<usize>,
    /// With --hosts: each host's link to the switch carries at most RATE each way (tc's tbf:
    /// 100mbit, 1gbit).
    #[arg(long, value_name = "RATE", value_parser = relay_harness::netns::parse_rate, requires = "hosts")]
    pub link_rate: Option<u64>,
    /// With --hosts: each host's link delays every packet by DUR each way (netem: a message
    /// from client to relay crosses two links). Kernels without netem say so.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, requires = "hosts")]
    pub link_delay: Option<Duration>,
    /// With --hosts: each host's link drops PCT percent of packets each way (netem; TCP sends
    /// them again).
    #[arg(long, value_name = "PCT", requires = "hosts")]
    pub link_loss: Option<f64>,
    /// A script given as text (name, text), for `demo`.
    #[arg(skip)]
    pub inline_script: Option<(String, String)>,
    /// Trace for the results folder (trace.txt, sequence.svg) without printing the timeline:
    /// `demo --report`.
    #[arg(skip)]
    pub trace_quietly: bool,
}

/// `--clients`: one client at least (a count, not a flag that starts with `-`).
fn parse_clients(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("a run needs at least 1 client".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("give a number of clients, 1 or more (e.g. --clients 8)".into()),
    }
}

/// `--msgs`: a count of messages per client, 0 or more.
fn parse_msgs(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| "give a number of messages per client, 0 or more (e.g. --msgs 1000)".into())
}

/// `--quiet-period`: a duration, or `off` (zero).
fn parse_quiet(s: &str) -> Result<Duration, String> {
    if s == "off" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e}; give e.g. 1s, 500ms or off"))
}

/// The run the flags describe (a script is read here; its errors name file:line:col).
fn spec_of(a: &Args) -> Result<RunSpec, RunError> {
    let script = match (&a.inline_script, &a.scenario) {
        (Some((name, text)), _) => Some((PathBuf::from(name), Script::parse(name, text))),
        (None, Some(path)) => Some((path.clone(), Script::load(path))),
        (None, None) => None,
    };
    let (traffic, seed) = match script {
        Some((path, script)) => {
            let script = script.map_err(|e| RunError::usage(e.to_string()))?;
            let seed = a.seed.or(script.seed).unwrap_or_else(fresh_seed);
            (Traffic::Script { path, script }, seed)
        }
        None => {
            let traffic = Traffic::Random {
                clients: a.clients,
                amount: match a.duration {
                    Some(d) => Amount::For(d),
                    None => Amount::Msgs(a.msgs),
                },
                payload: a.payload,
                pattern: a.pattern,
            };
            (traffic, a.seed.unwrap_or_else(fresh_seed))
        }
    };
    let spec = RunSpec {
        traffic,
        seed,
        transport: match &a.relay_addr {
            Some(crate::sys::Addr::Tcp(_)) => Transport::Tcp,
            Some(crate::sys::Addr::Unix(_)) => Transport::Unix,
            None if a.hosts.is_some() => Transport::Tcp,
            None => a.transport,
        },
        backend: a.backend,
        relay_spin: a.relay_spin,
        max_buffer: a.max_buffer,
        peer_timeout: a.peer_timeout,
        inject: a.inject,
        relay_cmd: a.relay_cmd.clone(),
        relay_addr: a.relay_addr.clone(),
        hosts: a.hosts,
        links: relay_harness::netns::Shape {
            rate_bits: a.link_rate,
            delay: a.link_delay,
            loss_pct: a.link_loss,
        },
        timeout: a.timeout,
        quiet: (!a.quiet_period.is_zero()).then_some(a.quiet_period),
        write_chunks: a.write_chunks,
        nemesis: a.nemesis.as_ref().map(|kinds| NemesisSpec {
            kinds: kinds.clone(),
            interval: a.nemesis_interval,
            lasting: a.nemesis_for,
        }),
        trace: a.trace || a.trace_quietly,
    };
    spec.check()?;
    Ok(spec)
}

/// One stderr line per milestone, for `-v` (progress is the bar's).
fn narrate(m: &Milestone) {
    if !matches!(m, Milestone::Progress { .. }) {
        eprintln!("relay-sim: {m}");
    }
}

/// The progress bar on stderr: a reporter of the supervisor's progress milestones. It is
/// drawn when a milestone comes (indicatif's own ticker thread is never started: the process
/// forks again on a restart, and must stay single-threaded) and cleared when the run stops.
#[derive(Default)]
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn show(&mut self, m: &Milestone) {
        match m {
            Milestone::Progress {
                delivered,
                expected,
                elapsed,
            } => {
                let bar = self.0.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::with_draw_target(
                        Some(*expected),
                        indicatif::ProgressDrawTarget::stderr_with_hz(10),
                    );
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{bar:30} {human_pos}/{human_len} delivered, {msg}",
                    ) {
                        b.set_style(style);
                    }
                    b
                });
                let rate = *delivered as f64 / elapsed.as_secs_f64();
                let eta = (expected - delivered) as f64 / rate.max(1.0);
                bar.set_message(format!("{:.2}M msg/s, ETA {eta:.0} s", rate / 1e6));
                bar.set_position(*delivered);
            }
            Milestone::Stopping(_) | Milestone::Exited { .. } => self.clear(),
            _ => {}
        }
    }

    fn clear(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
    }
}

/// Runs the harness; returns the exit code.
pub fn run(a: Args) -> i32 {
    run_narrated(a, false)
}

/// Runs the harness; with `demo`, keeps transcripts and tells the story before the report.
/// Returns the exit code.
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
    match run_and_render(&a, demo, &signals) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("relay-sim: {e}");
            e.code
        }
    }
}

fn run_and_render(a: &Args, demo: bool, signals: &Signals) -> Result<i32, RunError> {
    let spec = spec_of(a)?;
    if let Some(folder) = &a.report {
        prepare_report_folder(folder)?;
    }
    if !a.json && !demo {
        // The seed first, so even a run that never ends can be replayed. (What the run is
        // comes in the report's first line: this one says only what is happening now.)
        match &spec.relay_addr {
            Some(addr) => println!(
                "relay-sim: seed {}; forking {} clients for the relay at {addr}",
                spec.seed,
                spec.clients()
            ),
            None => println!(
                "relay-sim: seed {}; forking the relay and {} clients",
                spec.seed,
                spec.clients()
            ),
        }
        let _ = std::io::stdout().flush();
    }
    let opts = Options {
        transcripts: demo,
        // Only for a person watching: not with --json, not into a pipe or a CI log.
        progress: !a.json && !demo && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        relay_log_dir: a.report.clone(),
        verbose: a.verbose,
    };
    let mut story: Vec<(u64, String)> = Vec::new();
    let mut bar = Bar::default();
    let mut on = |m: Milestone| {
        bar.show(&m);
        if a.verbose {
            narrate(&m);
        }
        if demo {
            story.push((now_ns(), m.story()));
        }
    };
    // SAFETY: relay-sim starts no thread (the progress bar draws from the supervisor's own
    // loop), and the milestone callback above starts none.
    let ran = unsafe { crate::run::run(&spec, signals, &opts, &mut on) };
    bar.clear();
    let ran = ran?;
    let r = &ran.report;
    let mut text = String::new();
    if demo {
        for (i, rep) in ran.outcome.reports.iter().enumerate() {
            if let Some(rep) = rep {
                story.extend(
                    rep.transcript
                        .iter()
                        .map(|(t, what)| (*t, format!("{} {what}", ran.names[i]))),
                );
            }
        }
        text.push_str(&tell(story));
    }
    if let (Some(t), true, false) = (&ran.outcome.timeline, a.trace, a.json) {
        text.push_str(&t.render());
        text.push('\n');
    }
    text.push_str(&if a.json {
        report::json(r)
    } else {
        if a.all_clients {
            report::human_full(r)
        } else {
            report::human(r)
        }
    });
    // A closed stdout (a pager that quit) is not an error worth a message.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    if let Some(folder) = &a.report {
        write_report_dir(folder, r, &ran.outcome, &ran.verification, &ran.names)
            .map_err(|e| RunError::env(format!("--report {}: {e}", folder.display())))?;
    }
    if let (Some(sig), false) = (signals.caught(), r.ending == report::Ended::Interrupted) {
        // It came after the run, while it was verified and reported: the report stands, and
        // the exit code still says a signal asked us to stop.
        eprintln!(
            "relay-sim: interrupted by {} after the run (its report is above)",
            signal_name(sig)
        );
        return Ok(exit::interrupted(sig));
    }
    Ok(r.exit_code)
}

/// What a results folder holds (a run writes some of them).
const REPORT_FILES: [&str; 9] = [
    "report.json",
    "report.txt",
    "junit.xml",
    "index.html",
    "latency.svg",
    "rate.svg",
    "sequence.svg",
    "trace.txt",
    "relay.log",
];

/// `--report DIR`, checked before anything runs: a new folder, or an earlier report's (whose
/// files are removed, so none of them is left from another run), that this process can write
/// to. Anything else is refused with one line, before a long run is wasted.
fn prepare_report_folder(folder: &std::path::Path) -> Result<(), RunError> {
    let shown = folder.display();
    if folder.exists() && !folder.is_dir() {
        return Err(RunError::usage(format!(
            "--report {shown}: exists and is not a folder; give a new folder, or an earlier report's"
        )));
    }
    std::fs::create_dir_all(folder)
        .map_err(|e| RunError::env(format!("--report {shown}: cannot create it: {e}")))?;
    let entries: Vec<String> = std::fs::read_dir(folder)
        .map_err(|e| RunError::env(format!("--report {shown}: cannot read it: {e}")))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    if let Some(other) = entries.iter().find(|n| !REPORT_FILES.contains(&n.as_str())) {
        return Err(RunError::usage(format!(
            "--report {shown}: holds {other:?}, so it is not a relay-sim report; give a new folder, or an earlier report's (its files are replaced)"
        )));
    }
    for name in &entries {
        std::fs::remove_file(folder.join(name))
            .map_err(|e| RunError::env(format!("--report {shown}: cannot replace {name}: {e}")))?;
    }
    // Writable? Better to know now than after the run.
    tempfile::NamedTempFile::new_in(folder)
        .map(drop)
        .map_err(|e| RunError::env(format!("--report {shown}: cannot write there: {e}")))
}

/// The results folder: the reports, the pictures and index.html.
fn write_report_dir(
    folder: &std::path::Path,
    r: &report::Report,
    outcome: &relay_harness::supervisor::Outcome,
    v: &relay_harness::verify::Verification,
    names: &[String],
) -> std::io::Result<()> {
    use relay_harness::plots::{self, Picture};
    std::fs::create_dir_all(folder)?;
    std::fs::write(folder.join("report.json"), report::json(r))?;
    std::fs::write(folder.join("report.txt"), report::human_full(r))?;
    std::fs::write(folder.join("junit.xml"), report::junit(r))?;
    let what = if r.config.pattern == "pingpong" {
        "round trip"
    } else {
        "send to delivery"
    };
    let mut pictures = Vec::new();
    if let Some(t) = &r.trace {
        std::fs::write(folder.join("trace.txt"), t.render())?;
        if let Some(svg) = plots::sequence_svg(t, plots::SEQ_MAX_MESSAGES) {
            pictures.push((
                "sequence.svg",
                "Sequence diagram (traced)",
                Picture::Svg(svg),
            ));
        }
    }
    let latency = plots::latency_svg(
        v.latency.as_ref(),
        &outcome.reports,
        outcome.released_ns,
        what,
    );
    pictures.push(("latency.svg", "Latency", latency));
    let rate = plots::rate_svg(
        &outcome.reports,
        names,
        outcome.released_ns,
        &outcome.nemesis,
    );
    pictures.push(("rate.svg", "Messages per second", rate));
    for (file, _, picture) in &pictures {
        if let Picture::Svg(svg) = picture {
            std::fs::write(folder.join(file), svg)?;
        }
    }
    std::fs::write(
        folder.join("index.html"),
        report::html(r, &pictures, r.trace.is_some()),
    )?;
    Ok(())
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
