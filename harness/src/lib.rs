//! relay-harness: the supervisor, scenarios, verifier and reports of relay-sim.
//!
//! It knows processes and message records, never sockets: the CLI in the root package gives
//! the supervisor the code that runs in the relay and client processes.

pub mod blackbox;
pub mod exit;
pub mod janitor;
pub mod payload;
pub mod plan;
pub mod plots;
pub mod record;
pub mod report;
pub mod scenario;
pub mod script;
pub mod supervisor;
pub mod trace;
pub mod verify;
