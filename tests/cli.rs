//! The command line: help, usage errors, and the interactive client by "hand".

mod util;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use assert_cmd::Command as Cmd;
use util::*;

/// The help text of `relay-sim ARGS --help`, which must succeed.
fn help_of(args: &[&str]) -> String {
    let out = Cmd::new(bin())
        .args(args)
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

#[track_caller]
fn assert_mentions(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "help lacks {w:?}:\n{text}");
    }
}

#[test]
fn help_is_complete() {
    assert_mentions(
        &help_of(&[]),
        &[
            "relay",
            "client",
            "demo",
            "run",
            "Exit codes",
            "--clients",
            "--msgs",
        ],
    );
    let relay = help_of(&["relay"]);
    assert_mentions(
        &relay,
        &[
            "--listen",
            "--max-frame",
            "--max-buffer",
            "--max-clients",
            "--backend",
            "--quiet",
            "64KiB",
            "1048576",
        ],
    );
    assert_mentions(&help_of(&["client"]), &["--connect", "--name"]);
    assert_mentions(
        &help_of(&["run"]),
        &[
            "--seed",
            "--payload",
            "--transport",
            "--timeout",
            "--scenario",
            "--json",
            "--write-chunks",
            "--max-buffer",
        ],
    );
}

#[test]
fn bad_flags_give_one_line_and_exit_2() {
    for args in [
        &["relay", "--bogus"][..],
        &["relay", "--max-buffer", "lots"],
        &["relay", "--max-buffer", "0"],
        &["run", "--max-buffer", "0"],
        &["relay", "--max-frame", "0"],
        &["relay", "--backend", "kqueue"],
        &["client"],
        &["client", "--name", "bad name"],
        &["frobnicate"],
        &["--clients", "0"],
        &["--msgs", "-5"],
        &["run", "--clients", "-1"],
    ] {
        let out = Cmd::new(bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line, got:\n{err}"
        );
        assert!(err.starts_with("relay-sim"), "{args:?}: {err}");
    }
}

/// `run --help` ends with run's exit codes, and its --report names the results folder's files.
#[test]
fn run_help_gives_exit_codes_and_the_report_files() {
    let help = help_of(&["run"]);
    assert_mentions(&help, &["Exit codes: 0", "2 usage error", "130", "143"]);
    assert_mentions(&help, &["index.html", "latency.svg", "sequence.svg"]);
}

/// The one line names what is wrong and what to give: the missing flag, a count.
#[test]
fn a_bad_flag_says_what_to_give() {
    for (args, words) in [
        (&["client"][..], &["--name"][..]),
        (&["--msgs", "-5"], &["'-5'", "--msgs", "number of messages"]),
        (&["--clients", "0"], &["--clients", "at least 1 client"]),
        (&["--clients", "x"], &["number of clients"]),
    ] {
        let out = Cmd::new(bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_mentions(&err, words);
        assert!(!err.contains("For more information"), "{err}");
    }
}

#[test]
fn client_without_a_relay_exits_3_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = Cmd::new(bin())
        .args(["client", "--name", "a", "--connect"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("none.sock") && err.contains("relay-sim relay"),
        "{err}"
    );
}

/// An interactive client process with piped stdin, stdout and stderr.
struct Interactive {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Interactive {
    #[track_caller]
    fn start(addr: &str, name: &str) -> Interactive {
        let mut child = Command::new(bin())
            .args(["client", "--connect", addr, "--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // "registered as NAME" on stderr: the client is in the relay's table.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(
            line.starts_with(&format!("registered as {name}")),
            "{line:?}"
        );
        Interactive {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
        }
    }

    fn type_line(&mut self, line: &str) {
        let w = self.stdin.as_mut().unwrap();
        writeln!(w, "{line}").unwrap();
        w.flush().unwrap();
    }

    fn read_line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).unwrap();
        s.trim_end().to_string()
    }

    /// Ctrl-D: close stdin; returns the exit code.
    fn end(mut self) -> Option<i32> {
        drop(self.stdin.take());
        self.child.wait().unwrap().code()
    }
}

#[test]
fn the_articles_example_by_hand() {
    for t in [Transport::Unix, Transport::Tcp] {
        let r = RelayProc::start(t, "select", &[]);
        let addr = r.addr.to_string();
        let mut b = Interactive::start(&addr, "ClientB");
        let mut a = Interactive::start(&addr, "ClientA");
        a.type_line("ClientB 1");
        assert_eq!(b.read_line(), "ClientA: 1");
        b.type_line("ClientA 2");
        assert_eq!(a.read_line(), "ClientB: 2");
        a.type_line("ClientC where are you?");
        let bounced = a.read_line();
        assert!(
            bounced.starts_with("! bounced") && bounced.contains("ClientC"),
            "{bounced}"
        );
        a.type_line("ClientB several words, kept as typed");
        assert_eq!(b.read_line(), "ClientA: several words, kept as typed");
        assert_eq!(a.end(), Some(0));
        assert_eq!(b.end(), Some(0));
    }
}

#[test]
fn a_taken_name_is_refused_clearly() {
    let r = RelayProc::start(Transport::Unix, "select", &[]);
    let addr = r.addr.to_string();
    let holder = Interactive::start(&addr, "same");
    let out = Cmd::new(bin())
        .args(["client", "--connect", &addr, "--name", "same"])
        .write_stdin("")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NAME_TAKEN"), "{err}");
    assert_eq!(holder.end(), Some(0));
}

#[test]
fn the_client_exits_1_when_the_relay_goes_away() {
    let mut r = RelayProc::start(Transport::Unix, "select", &[]);
    let mut c = Interactive::start(&r.addr.to_string(), "orphan");
    r.signal(nix::sys::signal::Signal::SIGTERM);
    r.wait_exit();
    let line = c.read_line();
    assert!(line.contains("closed"), "{line}");
    assert_eq!(c.end(), Some(1));
}
