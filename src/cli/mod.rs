//! The command line: one module per subcommand, each with its args and its `run()`.
//!
//! Exit codes: 0 success; 1 the work failed (a violation, a timeout, a relay error, a refused
//! client); 2 usage error; 3 the environment failed (cannot listen, connect, fork);
//! 130 interrupted by SIGINT, 143 by SIGTERM.

use clap::{Parser, Subcommand};

pub mod client;
pub mod conform;
pub mod relay;
pub mod run;

use relay_harness::exit;

#[derive(Parser, Debug)]
#[command(
    name = "relay-sim",
    version,
    about = "A select() relay, its clients, and a harness that verifies every message",
    after_help = "Exit codes: 0 success (every message verified), 1 failure (a violation, a timeout, a \
                  process that died, a relay error, a refused client), 2 usage error, 3 environment \
                  error (cannot fork, listen or connect), 130 interrupted (SIGINT), 143 (SIGTERM).\n\n\
                  The front door:\n  relay-sim --clients 8 --msgs 10000\n\n\
                  Two terminals, one relay:\n  \
                  relay-sim relay --listen /tmp/relay.sock\n  \
                  relay-sim client --connect /tmp/relay.sock --name ClientA"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, relay-sim runs the harness (`run`).
    #[command(flatten)]
    run: run::Args,
}

/// `run`'s exit codes, at the end of `relay-sim run --help`.
const RUN_EXIT_CODES: &str = "Exit codes: 0 every message verified; 1 a violation, a stall, a \
    timeout, a process that died or a relay error; 2 usage error; 3 the environment failed \
    (cannot fork, listen, or start the relay); 130 interrupted by SIGINT, 143 by SIGTERM.";

#[derive(Subcommand, Debug)]
enum Command {
    /// Fork the relay and N clients, exchange messages, verify every one, report (the default).
    #[command(after_help = RUN_EXIT_CODES)]
    Run(Box<run::Args>),
    /// Run the 2005 article's example (fixtures/article-example.scn) and tell what happened:
    /// who forked whom, who registered, who sent what, who got what, and the verdict.
    Demo(DemoArgs),
    /// Check a relay against docs/protocol.md, one clause per case: the built-in relay on
    /// every backend, or yours with --relay-cmd. Exit 1 when any case fails.
    Conform(conform::Args),
    /// Run the relay in the foreground (logs to stderr; Ctrl-C stops it).
    Relay(relay::Args),
    /// Connect to a relay interactively: stdin lines `DST text` are sent to DST.
    Client(client::Args),
}

/// Whether `args` (the words after `relay-sim`) parse as a command line, as `main` would
/// read them: Err with clap's words when not. (tests/readme.rs checks the docs' commands.)
pub fn parses(args: &[&str]) -> Result<(), String> {
    let argv = std::iter::once("relay-sim").chain(args.iter().copied());
    Cli::try_parse_from(argv)
        .map(drop)
        .map_err(|e| one_line(&e))
}

/// The command line's entry: parses the arguments, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        None => run::run(cli.run),
        Some(Command::Run(a)) => run::run(*a),
        Some(Command::Relay(a)) => relay::run(a),
        Some(Command::Client(a)) => client::run(a),
        Some(Command::Demo(d)) => demo(d),
        Some(Command::Conform(a)) => conform::run(a),
    }
}

/// Flags of `relay-sim demo`.
#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// How the clients reach the relay.
    #[arg(long, value_name = "unix|tcp", value_enum, default_value_t = crate::spec::Transport::Unix)]
    transport: crate::spec::Transport,
    /// Print the timeline of every process: forks, pipes, socket calls, each select(), each
    /// frame routed, exits (docs/walkthrough.md reads it line by line).
    #[arg(long)]
    trace: bool,
    /// Also write the results folder: report.json, report.txt, junit.xml, trace.txt, the
    /// sequence diagram and index.html (the run is traced for it, without --trace printing).
    #[arg(long, value_name = "DIR")]
    report: Option<std::path::PathBuf>,
}

/// The article's example, narrated.
fn demo(d: DemoArgs) -> i32 {
    const ARTICLE: &str = include_str!("../../fixtures/article-example.scn");
    println!("relay-sim demo: the 2005 article's example, as real processes.");
    println!("One relay process, two client processes; the clients talk only through the relay.\n");
    println!("The script (fixtures/article-example.scn):");
    for line in ARTICLE.lines().filter(|l| !l.trim().is_empty()) {
        println!("  | {line}");
    }
    println!();
    let args = run::Args {
        clients: 0,
        msgs: 0,
        duration: None,
        seed: Some(1),
        payload: relay_harness::payload::PayloadSize { min: 0, max: 0 },
        transport: d.transport,
        backend: crate::spec::Backend::Select,
        timeout: None,
        json: false,
        all_clients: false,
        verbose: false,
        write_chunks: None,
        scenario: None,
        inject: None,
        trace_quietly: d.report.is_some(),
        report: d.report,
        trace: d.trace,
        relay_spin: crate::relay::Spin::Auto,
        max_buffer: None,
        peer_timeout: None,
        relay_cmd: None,
        relay_addr: None,
        hosts: None,
        link_rate: None,
        link_delay: None,
        link_loss: None,
        nemesis: None,
        nemesis_interval: std::time::Duration::from_millis(200),
        nemesis_for: None,
        quiet_period: std::time::Duration::from_secs(1),
        pattern: crate::spec::Pattern::Mesh,
        inline_script: Some(("article-example.scn".into(), ARTICLE.into())),
    };
    run::run_narrated(args, true)
}

/// A parse error in one line: clap's first line, with what it lists under it (the flags a
/// command needs) joined on, and without its usage and tip lines.
fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("bad arguments");
    let mut out = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let listed: Vec<&str> = lines
        .take_while(|l| {
            !l.starts_with("Usage:") && !l.starts_with("tip:") && !l.starts_with("For more")
        })
        .collect();
    if !listed.is_empty() {
        out = format!("{out} {}", listed.join(", "));
    }
    out
}

/// Help and version print as clap renders them; any other parse error becomes one line.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                exit::USAGE
            } else {
                exit::OK
            }
        }
        _ => {
            eprintln!("relay-sim: {} (see relay-sim --help)", one_line(&e));
            exit::USAGE
        }
    }
}

/// Parses `--max-buffer`: a size of at least one byte (with none, no frame could ever be queued).
pub fn parse_buffer(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n == 0 {
        return Err(format!(
            "{s:?} is too small: a receiver must be able to queue at least a byte"
        ));
    }
    usize::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

/// Parses a byte size: `65536`, `64K`, `64KiB`, `1M`, `1MiB`, `1G` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use a number of bytes, e.g. 65536 or 64KiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?}; use K, M or G"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("1T").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
