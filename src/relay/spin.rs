//! When the relay busy-polls instead of blocking in its wait.
//!
//! A relay that blocks after every frame pays a wake-up per hop: in a conversation (a request,
//! then its answer) that is most of the round trip. Polling with a zero timeout for a little
//! while after activity catches the answer awake, and saves the kernel the sleep and the
//! wake-up. `Auto` polls for 50 us (the figure Linux's `net.core.busy_poll` documentation
//! suggests for select() over several sockets), but not on a crowded machine: it reads the
//! number of runnable tasks (the 4th field of /proc/loadavg, this relay included) and blocks as
//! the textbook loop does while that number is more than four per core, where a polling relay
//! would take CPU other work is queueing for.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// How long `auto` keeps polling after the last activity.
pub const AUTO_WINDOW: Duration = Duration::from_micros(50);
/// Runnable tasks per core above which `auto` does not poll.
const CROWDED_PER_CORE: usize = 4;
/// How often `auto` looks again at how many tasks are runnable while it polls.
const RECHECK: Duration = Duration::from_micros(50);

/// The busy-poll policy: `--spin off|auto|DUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spin {
    /// Always block in the wait (the textbook loop).
    #[default]
    Off,
    /// Poll for [`AUTO_WINDOW`] after activity unless the machine is crowded.
    Auto,
    /// Poll this long after activity, whatever else runs.
    For(Duration),
}

impl Spin {
    /// Parses `off`, `auto`, or a duration (`100us`; `0` means off).
    pub fn parse(s: &str) -> Result<Spin, String> {
        match s {
            "off" => Ok(Spin::Off),
            "auto" => Ok(Spin::Auto),
            _ => match humantime::parse_duration(s) {
                Ok(d) if d.is_zero() => Ok(Spin::Off),
                Ok(d) => Ok(Spin::For(d)),
                Err(e) => Err(format!("{e} (use off, auto, or a duration such as 100us)")),
            },
        }
    }
}

impl std::fmt::Display for Spin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spin::Off => f.write_str("off"),
            Spin::Auto => f.write_str("auto"),
            Spin::For(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// The policy's state in a running relay.
pub(crate) struct Spinner {
    policy: Spin,
    cpus: usize,
    /// /proc/loadavg, kept open (re-read with pread); None when unreadable: then `auto` is off.
    loadavg: Option<File>,
    /// The last answer of `uncrowded` and when it was taken.
    uncrowded: (bool, Instant),
    /// When the last wait returned something.
    last_active: Instant,
}

impl Spinner {
    pub(crate) fn new(policy: Spin) -> Spinner {
        let now = Instant::now();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Spinner {
            policy,
            cpus,
            // One core: polling would only delay whoever the poll waits for. Then, or without
            // /proc/loadavg, `auto` never polls.
            loadavg: (policy == Spin::Auto && cpus >= 2)
                .then(|| File::open("/proc/loadavg").ok())
                .flatten(),
            uncrowded: (false, now),
            last_active: now,
        }
    }

    /// Notes that the wait at `now` returned events.
    pub(crate) fn active(&mut self, now: Instant) {
        self.last_active = now;
    }

    /// Whether the next wait should poll (zero timeout) rather than block.
    pub(crate) fn poll_now(&mut self, now: Instant) -> bool {
        let idle = now.saturating_duration_since(self.last_active);
        match self.policy {
            Spin::Off => false,
            Spin::For(d) => idle < d,
            Spin::Auto => idle < AUTO_WINDOW && self.uncrowded(now),
        }
    }

    /// Whether the runnable tasks (this relay among them) are few enough for polling: at most
    /// [`CROWDED_PER_CORE`] per core.
    fn uncrowded(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.uncrowded.1) < RECHECK {
            return self.uncrowded.0;
        }
        let ok = self
            .loadavg
            .as_ref()
            .and_then(runnable)
            .is_some_and(|n| n <= self.cpus * CROWDED_PER_CORE);
        self.uncrowded = (ok, now);
        ok
    }
}

/// Tasks runnable now, from /proc/loadavg ("0.20 0.18 0.12 1/80 11206": the 1).
fn runnable(f: &File) -> Option<usize> {
    let mut buf = [0u8; 128];
    let n = f.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.split_whitespace()
        .nth(3)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(Spin::parse("off"), Ok(Spin::Off));
        assert_eq!(Spin::parse("0"), Ok(Spin::Off));
        assert_eq!(Spin::parse("auto"), Ok(Spin::Auto));
        assert_eq!(
            Spin::parse("100us"),
            Ok(Spin::For(Duration::from_micros(100)))
        );
        assert!(Spin::parse("fast").unwrap_err().contains("auto"));
        assert_eq!(Spin::For(Duration::from_micros(100)).to_string(), "100us");
    }

    #[test]
    fn off_never_polls_and_a_fixed_spin_ends() {
        let t0 = Instant::now();
        let mut off = Spinner::new(Spin::Off);
        off.active(t0);
        assert!(!off.poll_now(t0));
        let mut fixed = Spinner::new(Spin::For(Duration::from_millis(1)));
        fixed.active(t0);
        assert!(fixed.poll_now(t0 + Duration::from_micros(10)));
        assert!(!fixed.poll_now(t0 + Duration::from_millis(2)));
    }

    #[test]
    fn auto_stops_polling_after_its_window() {
        let t0 = Instant::now();
        let mut auto = Spinner::new(Spin::Auto);
        auto.active(t0);
        assert!(!auto.poll_now(t0 + AUTO_WINDOW * 2));
    }

    /// A spinner that reads its runnable count from a file of ours, on a two-core machine.
    fn auto_reading(text: &str) -> (Spinner, tempfile::NamedTempFile) {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        let mut s = Spinner::new(Spin::Auto);
        s.cpus = 2;
        s.loadavg = Some(File::open(f.path()).expect("open"));
        (s, f)
    }

    #[test]
    fn a_fixed_spin_polls_for_its_length_after_the_last_activity() {
        let d = Duration::from_millis(1);
        let mut fixed = Spinner::new(Spin::For(d));
        let t0 = Instant::now() + Duration::from_secs(1);
        fixed.active(t0);
        assert!(fixed.poll_now(t0 + d / 2));
        assert!(
            !fixed.poll_now(t0 + d),
            "the window is [activity, activity + d)"
        );
        fixed.active(t0 + d * 10);
        assert!(
            fixed.poll_now(t0 + d * 10 + d / 2),
            "each activity opens it again"
        );
    }

    #[test]
    fn auto_polls_only_while_few_tasks_are_runnable() {
        let t0 = Instant::now() + Duration::from_secs(1);
        // Up to 4 per core (8 here) is uncrowded: poll for the window.
        let (mut s, _f) = auto_reading("0.50 0.40 0.30 8/200 4242\n");
        s.active(t0);
        assert!(s.poll_now(t0 + AUTO_WINDOW / 2));
        assert!(!s.poll_now(t0 + AUTO_WINDOW), "the window is over");
        // More is crowded, and an unreadable count counts as crowded: never poll.
        for text in ["9.00 9.00 9.00 9/200 4242\n", "garbage"] {
            let (mut s, _f) = auto_reading(text);
            s.active(t0);
            assert!(!s.poll_now(t0 + AUTO_WINDOW / 2), "{text:?}");
        }
    }

    #[test]
    fn auto_reads_the_count_again_only_after_its_recheck_interval() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let (mut s, f) = auto_reading("0.50 0.40 0.30 1/200 4242\n");
        s.active(t0);
        assert!(s.poll_now(t0 + RECHECK / 5));
        std::fs::write(f.path(), "9.00 9.00 9.00 99/200 4242\n").expect("rewrite");
        s.active(t0 + RECHECK / 2);
        assert!(
            s.poll_now(t0 + RECHECK / 2),
            "within the interval: the last answer"
        );
        // One interval after the last reading (at RECHECK / 5), to the tick.
        let due = t0 + RECHECK / 5 + RECHECK;
        s.active(due);
        assert!(
            !s.poll_now(due),
            "once it has passed: read again, now crowded"
        );
    }

    #[test]
    fn reads_the_runnable_count() {
        if let Ok(f) = File::open("/proc/loadavg") {
            assert!(runnable(&f).is_some_and(|n| n >= 1), "this test runs");
        }
    }
}
