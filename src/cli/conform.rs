//! `relay-sim conform`: the conformance suite against the built-in relay (every backend) or
//! any relay program (`--relay-cmd`).

use clap::Args as ClapArgs;

use crate::conform::{self, RelayUnderTest};
use crate::relay::backend;
use relay_harness::exit;
use relay_harness::janitor;

/// Flags of `relay-sim conform`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The relay to check: `sh -c CMD`, `{addr}` replaced by the socket path or 127.0.0.1:PORT
    /// it must listen on. Without it: the built-in relay, once per backend.
    #[arg(long, value_name = "CMD")]
    pub relay_cmd: Option<String>,
    /// Check a relay that is already running, here or on another host: `unix:PATH`, a path,
    /// or HOST:PORT (TCP; --transport follows it). Every case meets that one relay, with names
    /// of its own (`p4242k3-alice`); the last case opens 1,100 connections to it.
    #[arg(long, value_name = "ADDR", value_parser = crate::sys::Addr::parse, conflicts_with = "relay_cmd")]
    pub relay_addr: Option<crate::sys::Addr>,
    /// How the cases reach the relay.
    #[arg(long, value_name = "unix|tcp", default_value = "unix", value_parser = ["unix", "tcp"])]
    pub transport: String,
    /// Print one JSON document instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Also write the results as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<std::path::PathBuf>,
}

/// Runs the suite; exit 1 when any case failed.
pub fn run(a: Args) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(p) => p.display().to_string(),
        Err(e) => {
            eprintln!("relay-sim conform: cannot find this program's path: {e}");
            return exit::ENV;
        }
    };
    let transport = match &a.relay_addr {
        Some(crate::sys::Addr::Tcp(_)) => "tcp".to_string(),
        Some(crate::sys::Addr::Unix(_)) => "unix".to_string(),
        None => a.transport.clone(),
    };
    let relays: Vec<(String, String)> = match (&a.relay_cmd, &a.relay_addr) {
        (_, Some(addr)) => vec![(format!("the relay at {addr}"), String::new())],
        (Some(cmd), None) => vec![(cmd.clone(), cmd.clone())],
        (None, None) => backend::NAMES
            .iter()
            .map(|b| {
                (
                    format!("built-in relay, {b}"),
                    format!("{exe} relay --quiet --backend {b} --listen {{addr}}"),
                )
            })
            .collect(),
    };
    // As in a run: if we are SIGKILLed, the janitor (forked first, while this process has
    // one thread) kills the relay under test and removes the directory of sockets and logs.
    if let Err(e) = janitor::start() {
        eprintln!("relay-sim conform: cannot start the cleanup process: {e}; check the process limit (ulimit -u)");
        return exit::ENV;
    }
    let _janitor = janitor::Done; // dropped last: after `dir`, on every return
    let dir = match tempfile::Builder::new()
        .prefix("relay-sim-conform-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("relay-sim conform: cannot create a temporary directory: {e}");
            return exit::ENV;
        }
    };
    janitor::dir(dir.path());
    let mut all = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    for (label, command) in relays {
        let r = RelayUnderTest {
            command,
            transport: transport.clone(),
            log_dir: dir.path().to_path_buf(),
            at: a.relay_addr.clone(),
        };
        if !a.json {
            println!("{label} ({transport}):");
        }
        let outcomes = conform::run_all(&r);
        for (n, o) in outcomes.iter().enumerate() {
            if o.verdict == "pass" {
                passed += 1;
            } else {
                failed += 1;
            }
            if !a.json {
                println!("  {:<4}  {:<36} {}", o.verdict, o.case, o.clause);
                if let Some(d) = &o.detail {
                    println!("        {d}");
                    let tail = conform::log_tail(dir.path(), n);
                    for line in tail.lines() {
                        println!("        relay: {line}");
                    }
                }
            }
        }
        all.push((label, outcomes));
    }
    if a.json {
        let doc = serde_json::json!({
            "schema_version": 1,
            "transport": transport,
            "relays": all.iter().map(|(label, o)| serde_json::json!({"relay": label, "cases": o})).collect::<Vec<_>>(),
            "passed": passed,
            "failed": failed,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!("{passed} passed, {failed} failed");
    }
    if let Some(path) = &a.junit {
        if let Err(e) = std::fs::write(path, junit(&all)) {
            eprintln!("relay-sim conform: --junit {}: {e}", path.display());
            return exit::ENV;
        }
    }
    if failed == 0 {
        exit::OK
    } else {
        exit::FAIL
    }
}

fn junit(all: &[(String, Vec<conform::CaseReport>)]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("relay-sim conform");
    for (label, outcomes) in all {
        let mut suite = TestSuite::new(label.as_str());
        for o in outcomes {
            let status = match &o.detail {
                None => TestCaseStatus::success(),
                Some(d) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(d.as_str()).set_description(o.clause);
                    s
                }
            };
            let mut case = TestCase::new(o.case, status);
            case.set_time(std::time::Duration::from_millis(o.ms));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().unwrap_or_default()
}
