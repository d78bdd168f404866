//! relay-harness: the supervisor, scenarios, verifier and reports of relay-sim.
//!
//! It knows processes and message records, never sockets. The harness issue fills it;
//! for now it holds only the crate skeleton so the workspace layout is in place.
