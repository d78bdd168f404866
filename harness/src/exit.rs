//! Exit codes, one list for every process of relay-sim: the binary, its relay and clients
//! (docs/report.md explains each).

/// Success: every message verified (or the subcommand did what it was asked).
pub const OK: i32 = 0;
/// The work failed: a violation, a timeout, a process that died, a relay error, a refused client.
pub const FAIL: i32 = 1;
/// A usage error: the command line or a scenario file is wrong.
pub const USAGE: i32 = 2;
/// The environment failed: cannot fork, listen, connect, or start the relay.
pub const ENV: i32 = 3;
/// A command could not be run at all (what a shell exits with for one it cannot find).
pub const CANNOT_EXEC: i32 = 127;

/// A run a signal interrupted: 128 + its number, as a shell reports a process that signal
/// ended (130 for SIGINT, 143 for SIGTERM).
pub fn interrupted(sig: i32) -> i32 {
    128 + sig
}
