//! The conformance suite: the built-in relay passes every case on every backend, the small
//! Python relay passes every case, and the 2005 design fails exactly the cases about clients
//! that stall, each with a reason.

mod util;

use std::process::Command;

use serde_json::Value;
use util::bin;

fn conform(extra: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(bin())
        .arg("conform")
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

fn failed_cases(v: &Value) -> Vec<String> {
    v["relays"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["cases"].as_array().unwrap().iter())
        .filter(|c| c["verdict"] == "fail")
        .map(|c| c["case"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_built_in_relay_passes_every_case_on_every_backend() {
    for transport in ["unix", "tcp"] {
        let (code, v) = conform(&["--transport", transport]);
        assert_eq!(code, Some(0), "{v:#}");
        assert_eq!(
            v["relays"].as_array().unwrap().len(),
            3,
            "select, poll, epoll"
        );
        assert_eq!(v["failed"], 0);
        assert!(v["passed"].as_u64().unwrap() >= 3 * 16);
    }
}

#[test]
fn the_python_relay_passes_every_case() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: no python3");
        return;
    }
    let relay = format!(
        "python3 {}/fixtures/relays/minimal.py {{addr}}",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, v) = conform(&["--relay-cmd", &relay]);
    assert_eq!(code, Some(0), "{:?}", failed_cases(&v));
}

#[test]
fn the_classic_relay_fails_exactly_the_stalling_cases_and_junit_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("classic");
    let src = format!("{}/fixtures/relays/classic.c", env!("CARGO_MANIFEST_DIR"));
    match Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "classic.c does not compile: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            eprintln!("skipped: no C compiler (cc: {e}); CI has one");
            return;
        }
    }
    let junit = dir.path().join("junit.xml");
    let relay = format!("{} {{addr}}", exe.display());
    let (code, v) = conform(&["--relay-cmd", &relay, "--junit", junit.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(
        failed_cases(&v),
        [
            "others flow past a half-sent frame",
            "a client that never reads",
            "a stopped client"
        ],
        "{v:#}"
    );
    for c in v["relays"][0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "fail")
    {
        assert!(
            c["detail"]
                .as_str()
                .unwrap()
                .contains("nothing came within"),
            "{c}"
        );
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).expect("valid JUnit");
    assert_eq!(report.failures, 3);
}

/// SIGKILL of `relay-sim conform` in the middle of its cases: its janitor kills the relay
/// under test and removes the directory of sockets and logs. Each relay announces itself on a
/// FIFO and waits at a gate; the test lets the first through and kills conform while the
/// second waits (readiness, no sleep).
#[test]
fn after_sigkill_of_conform_no_relay_and_no_file_is_left() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::{BufRead, Write};
    let tmp = tempfile::tempdir().unwrap();
    let fifo = |name: &str| {
        let path = tmp.path().join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Read-write: opening never blocks, and the reader never sees end of file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (path, file)
    };
    let (started, announced) = fifo("started");
    let (gate, mut go) = fifo("gate");
    let relay = format!(
        "echo $$ > {}; read go < {}; exec {} relay --quiet --listen {{addr}}",
        started.display(),
        gate.display(),
        bin().display()
    );
    let tmpdir = tmp.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let mut child = Command::new(bin())
        .args(["conform", "--relay-cmd", &relay])
        .env("TMPDIR", &tmpdir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut pids = std::io::BufReader::new(announced).lines();
    let mut next_pid = || -> i32 { pids.next().unwrap().unwrap().trim().parse().unwrap() };
    let first = next_pid();
    go.write_all(b"go\n").unwrap();
    let second = next_pid(); // waits at the gate for good
                             // conform's children now: its janitor and the second relay.
    let pid = child.id();
    let children: Vec<i32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        children.contains(&second) && children.len() == 2,
        "{children:?}"
    );
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // The janitor kills the relay's group, removes the directory, then exits.
    for pid in children.into_iter().chain([first]) {
        assert!(util::exits(pid), "process {pid} still runs after 20 s");
    }
    let left: Vec<_> = std::fs::read_dir(&tmpdir).unwrap().collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
}

/// A relay already running (`--relay-addr`), started by someone else: every case meets that
/// one relay with names of its own, so the suite passes against it twice in a row, over Unix
/// sockets and TCP; at an address where nothing listens, every case fails saying so.
#[test]
fn a_relay_already_running_passes_every_case_at_its_address() {
    for t in [util::Transport::Unix, util::Transport::Tcp] {
        let mut relay = util::RelayProc::start(t, "select", &[]);
        let addr = relay.addr.to_string();
        for _ in 0..2 {
            let (code, v) = conform(&["--relay-addr", &addr]);
            assert_eq!(code, Some(0), "{addr}: {:?}", failed_cases(&v));
            assert_eq!(v["relays"].as_array().unwrap().len(), 1);
            assert_eq!(v["relays"][0]["relay"], format!("the relay at {addr}"));
            assert!(v["passed"].as_u64().unwrap() >= 16, "{v:#}");
            let tcp = !addr.starts_with("unix:");
            assert_eq!(v["transport"], if tcp { "tcp" } else { "unix" });
        }
        assert!(
            relay.child.try_wait().unwrap().is_none(),
            "the relay is still up"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody.sock").display().to_string();
    let (code, v) = conform(&["--relay-addr", &sock]);
    assert_eq!(code, Some(1));
    assert_eq!(v["passed"], 0);
    let detail = v["relays"][0]["cases"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("nothing accepts connections at --relay-addr"),
        "{detail}"
    );
}
