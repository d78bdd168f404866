//! The commands the README and docs show, checked as a newcomer would copy them: every one
//! parses as written, and the quick ones run and pass.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_relay-sim"))
}

/// Words of a shell command line: split at spaces, '...' kept as one word.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    for ch in line.chars() {
        match ch {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// Every command shown in a doc's code blocks: (file:line, the words after `relay-sim`).
/// Synopsis lines (with `[optional]` parts) are not commands.
fn commands(doc: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(doc).unwrap();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(code) = line.strip_prefix("    ") else {
            continue;
        };
        let code = code.split("  #").next().unwrap_or("").trim();
        let rest = code
            .strip_prefix("relay-sim ")
            .or_else(|| code.strip_prefix("cargo run --release -- "));
        let Some(rest) = rest else { continue };
        if rest.contains('[') {
            continue;
        }
        let name = doc.file_name().unwrap().to_string_lossy();
        out.push((format!("{name}:{}", i + 1), words(rest)));
    }
    out
}

fn docs() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    docs.sort();
    docs
}

#[test]
fn every_command_the_docs_show_parses_as_written() {
    let mut seen = 0;
    for doc in docs() {
        for (at, args) in commands(&doc) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Err(e) = relay_sim::cli::parses(&args) {
                panic!("{at}: `relay-sim {}` does not parse: {e}", args.join(" "));
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 15,
        "only {seen} commands found: is the extraction broken?"
    );
}

/// The README's quick examples run as written (from the repository's root, where their
/// paths point) and pass. The rest are checked by parsing above, and by their own tests: the
/// two-terminal relay and clients (tests/cli.rs), conform against minimal.py
/// (tests/conform.rs), a relay already running at --relay-addr (tests/run.rs); a ten-minute
/// soak is not a test.
#[test]
fn the_readmes_quick_examples_run_and_pass() {
    let quick = [
        "--clients 8 --msgs 10000",
        "--clients 200 --msgs 500 --payload 0..4096 --transport tcp",
        "run --scenario fixtures/fan-in.scn",
        "--relay-cmd 'python3 fixtures/relays/minimal.py {addr}'",
    ];
    let shown: Vec<Vec<String>> = commands(&root().join("README.md"))
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    for line in quick {
        let args = words(line);
        assert!(shown.contains(&args), "the README no longer shows `{line}`");
        let out = Command::new(bin())
            .args(&args)
            .current_dir(root())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "`relay-sim {line}`:\n{text}");
        assert!(
            text.contains("verdict:    PASS"),
            "`relay-sim {line}`:\n{text}"
        );
    }
    // The demo writes its results folder where it is run.
    let tmp = tempfile::tempdir().unwrap();
    let args = words("demo --trace --report out/");
    assert!(shown.contains(&args));
    let out = Command::new(bin())
        .args(&args)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(tmp.path().join("out/index.html").exists());
}

#[test]
fn command_lines_split_like_a_shell() {
    assert_eq!(
        words("--relay-cmd 'python3 x.py {addr}' --clients 2"),
        ["--relay-cmd", "python3 x.py {addr}", "--clients", "2"]
    );
}
