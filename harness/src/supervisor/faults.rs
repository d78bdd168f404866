//! Faults: the nemesis (seeded, every interval) and a script's fault lines (after a phase).
//! Both strike the same way: a signal (or, with `--hosts`, a link set down), a milestone, a
//! line in the report.

use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::children::{signal_group, Child};
use super::run::Run;
use super::{Action, Ending, Milestone, NemesisEvent, SuperviseError};
use crate::script::Fault;

/// What the run's faults have done and still owe.
pub(super) struct Faults {
    /// Draws the nemesis's actions and victims (seeded: a seed replays the same faults).
    rng: Pcg64Mcg,
    /// Nemesis actions so far.
    actions: u32,
    /// The client process the nemesis stopped, and until when.
    stopped: Option<(usize, Instant)>,
    /// The host the nemesis cut off the switch (0: the relay's), until when, and its line in
    /// the log.
    cut: Option<(usize, Instant, usize)>,
    /// When the current run of partitions began (one that starts after TCP had its chance to
    /// resend what the ones before dropped starts a new run).
    first_cut: Option<Instant>,
    /// Until when TCP may still be waiting to retransmit what a partition dropped (see
    /// `heal`): the quiet rule waits for it.
    retransmits_until: Option<Instant>,
    /// Clients the nemesis killed that are due a new process: (client, when).
    restarts: Vec<(usize, Instant)>,
    /// Per client: how many processes it has had after the first.
    incarnations: Vec<u32>,
    /// The relay was killed on purpose: the run ends there.
    pub relay_killed: bool,
    /// What every fault did, for the report.
    pub log: Vec<NemesisEvent>,
    /// A script's `stop ... for DUR`: (child, when it gets SIGCONT).
    conts: Vec<(usize, Instant)>,
    /// A script's `stop` without a duration: held until its `cont` line (children's places).
    pub held: Vec<usize>,
    /// A script's restarted processes that the next phase waits for.
    pub awaiting_ready: usize,
    /// The phase that starts once they have registered.
    pub release_after: Option<usize>,
}

impl Faults {
    /// No fault yet, for `n` clients; the nemesis draws with `seed`.
    pub fn new(seed: u64, n: usize) -> Faults {
        Faults {
            rng: Pcg64Mcg::seed_from_u64(seed ^ 0x4E3E),
            actions: 0,
            stopped: None,
            cut: None,
            first_cut: None,
            retransmits_until: None,
            restarts: Vec::new(),
            incarnations: vec![0; n],
            relay_killed: false,
            log: Vec::new(),
            conts: Vec::new(),
            held: Vec::new(),
            awaiting_ready: 0,
            release_after: None,
        }
    }

    /// A fault holds a process back (stopped, a restart due, a phase waiting for a restarted
    /// process) or what it sends (a partition, until TCP's retransmission after the heal may
    /// have come): the quiet rule pauses meanwhile.
    pub fn holds_a_process_back(&self, now: Instant) -> bool {
        self.stopped.is_some()
            || self.cut.is_some()
            || self.retransmits_until.is_some_and(|t| now < t)
            || !self.conts.is_empty()
            || !self.held.is_empty()
            || !self.restarts.is_empty()
            || self.release_after.is_some()
    }

    /// The incarnation of client `i`'s next process.
    pub fn next_incarnation(&mut self, i: usize) -> u32 {
        self.incarnations[i] += 1;
        self.incarnations[i]
    }

    /// At the end of the run: every child a fault still holds stopped (to be woken), the
    /// nemesis's stop counted as lasting until `end_ms`.
    pub fn still_stopped(&mut self, end_ms: u64) -> Vec<usize> {
        let mut out = Vec::new();
        if let Some((k, _)) = self.stopped.take() {
            out.push(k);
            if let Some(e) = self.log.iter_mut().rev().find(|e| e.action == Action::Stop) {
                e.for_ms = end_ms.saturating_sub(e.at_ms);
            }
        }
        out.extend(self.conts.drain(..).map(|(k, _)| k));
        out.append(&mut self.held);
        // A partition still in force lasted until the end (the network goes with the run).
        if let Some((_, _, line)) = self.cut.take() {
            if let Some(e) = self.log.get_mut(line) {
                e.for_ms = end_ms.saturating_sub(e.at_ms);
            }
        }
        out
    }
}

impl Run<'_> {
    /// Strikes child `k` (its place in the child table) with `action`: the signal, then the
    /// milestone and the report's line (`for_ms`: how long it stays stopped or dead).
    fn strike(&mut self, k: usize, action: Action, at_ms: u64, for_ms: u64) {
        let c = &mut self.children.0[k];
        match action {
            Action::Stop => {
                let _ = kill(c.pid, Signal::SIGSTOP);
            }
            Action::Cont => {
                let _ = kill(c.pid, Signal::SIGCONT);
            }
            Action::Kill | Action::Restart | Action::Relay => {
                signal_group(c.pid, Signal::SIGKILL);
                c.killed = true;
            }
            Action::Restarted | Action::Partition | Action::PartitionRelay | Action::Heal => {}
        }
        let role = c.name.clone();
        self.out.milestone(Milestone::Nemesis {
            role: role.clone(),
            action,
        });
        self.faults.log.push(NemesisEvent {
            action,
            role,
            at_ms,
            for_ms,
        });
    }

    /// Wakes a stopped child whose time is up (no line in the report: its stop has one).
    fn cont(&mut self, k: usize) {
        let c = &self.children.0[k];
        let _ = kill(c.pid, Signal::SIGCONT);
        let role = c.name.clone();
        self.out.milestone(Milestone::Nemesis {
            role,
            action: Action::Cont,
        });
    }

    /// A script's stopped clients whose time is up get SIGCONT, and a partition whose time
    /// is up (the nemesis's or a script's) heals. Returns when the next is due.
    pub(super) fn script_conts(&mut self, now: Instant) -> Option<Instant> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.faults.conts)
            .into_iter()
            .partition(|&(_, until)| now >= until);
        self.faults.conts = later;
        for (k, _) in due {
            self.cont(k);
        }
        if self.faults.cut.is_some_and(|(_, until, _)| now >= until) {
            self.heal();
        }
        let next = self.faults.conts.iter().map(|&(_, until)| until).min();
        match self.faults.cut {
            Some((_, until, _)) => Some(next.map_or(until, |n| n.min(until))),
            None => next,
        }
    }

    /// The nemesis: continues or restarts whoever is due, then acts again when it is time.
    /// Returns when it is next due (None: no nemesis, or not now).
    pub(super) fn nemesis(&mut self, now: Instant) -> Result<Option<Instant>, SuperviseError> {
        let limits = self.limits;
        let (Some(nem), Some(t0), None) = (&limits.nemesis, self.released_at, &self.ending) else {
            return Ok(None);
        };
        let at_ms = now.duration_since(t0).as_millis() as u64;
        if let Some((k, until)) = self.faults.stopped {
            if now >= until {
                self.cont(k);
                self.faults.stopped = None;
            }
        }
        while let Some(&(i, at)) = self.faults.restarts.first() {
            if now < at {
                break;
            }
            self.faults.restarts.remove(0);
            self.respawn(i, 0)?;
        }
        let due = t0 + nem.interval * (self.faults.actions + 1);
        // The nemesis rests in the second half of the deadline, so every process gets the
        // time to finish (restarts could otherwise go on until the deadline).
        let resting = now >= t0 + limits.deadline / 2;
        // Cuts in a row must not add up to one long outage (TCP's retries, 0.2, 0.6, 1.4 s
        // after a loss, can all land in cuts that come at a steady pace): past the relay's
        // bounds (a frame left half-sent for --frame-timeout, a silent peer for
        // --peer-timeout) it ends connections. So the next action waits until TCP may have
        // resent what the last cut dropped (and the peer timeout again), and, after a long
        // partition, until the processes that came back have registered.
        let tcp_behind = self
            .faults
            .retransmits_until
            .map(|t| t + nem.hold_after_cuts.unwrap_or_default())
            .filter(|&t| now < t);
        let held = tcp_behind.is_some()
            || (nem.long_partitions
                && (!self.faults.restarts.is_empty()
                    || self.children.0.iter().any(|c| {
                        c.client().is_some() && c.is_open() && !c.killed && c.ready_at.is_none()
                    })));
        if self.faults.stopped.is_none()
            && !held
            && self.faults.cut.is_none()
            && !self.faults.relay_killed
            && !resting
            && now >= due
            && !nem.kinds.is_empty()
        {
            // Turns let pass while a fault held the nemesis back are skipped, not owed: paid
            // back, they would strike one after another with no gap (a stop right after a
            // stop can add up past what one stop may last).
            let turns = (now.duration_since(t0).as_nanos() / nem.interval.as_nanos().max(1))
                .min(u32::MAX as u128) as u32;
            self.faults.actions = turns.max(self.faults.actions + 1);
            let action = nem.kinds[self.faults.rng.random_range(0..nem.kinds.len())];
            self.nemesis_strikes(action, now, at_ms);
        }
        // (Not in the past: a turn the nemesis let pass, resting or held back, would otherwise
        // have the loop wake at once, again and again.)
        let mut next = (t0 + nem.interval * (self.faults.actions + 1))
            .max(now + std::time::Duration::from_millis(10));
        if let Some((_, u)) = self.faults.stopped {
            next = u;
        }
        if let Some((_, u, _)) = self.faults.cut {
            next = u;
        }
        if let Some(t) = tcp_behind {
            next = next.max(t);
        }
        if let Some(&(_, at)) = self.faults.restarts.first() {
            next = next.min(at);
        }
        Ok(Some(next))
    }

    /// One nemesis action: on the relay, or on a client drawn with the seed.
    fn nemesis_strikes(&mut self, action: Action, now: Instant, at_ms: u64) {
        let Some(nem) = self.limits.nemesis.as_ref() else {
            return;
        };
        let n = self.n;
        if action == Action::Relay {
            self.strike(0, action, at_ms, 0);
            self.faults.relay_killed = true;
            return;
        }
        if action.is_partition() {
            self.partition(action, now, at_ms);
            return;
        }
        // Stop: any client process still running. Kill and restart: one still at work (a
        // client that is done only waits for the others) that has been registered for an
        // interval, so each process gets to do something before it dies; and kill leaves two
        // clients standing.
        let may_die = |c: &Child| {
            c.ready_at
                .is_some_and(|t| now.duration_since(t) >= nem.interval)
                && (action != Action::Kill || n - self.gone > 2)
        };
        let victims: Vec<usize> = (1..self.children.0.len())
            .filter(|&k| {
                let c = &self.children.0[k];
                let i = c.client().unwrap_or(0);
                c.is_open()
                    && !c.killed
                    && !self.has_reported(i)
                    && (action == Action::Stop || (!self.is_settled(i) && may_die(c)))
            })
            .collect();
        if victims.is_empty() {
            return;
        }
        // Drawn over all clients, then the next eligible one: the same seed picks the same
        // victims whenever the same clients are still at work.
        let pick = self.faults.rng.random_range(0..n);
        let client_of = |k: usize| self.children.0[k].client().unwrap_or(0);
        let k = victims
            .iter()
            .copied()
            .min_by_key(|&k| (client_of(k) + n - pick) % n)
            .unwrap_or(victims[0]);
        let i = client_of(k);
        let pause = nem.pause;
        let pause_ms = pause.as_millis() as u64;
        match action {
            Action::Stop => {
                self.strike(k, action, at_ms, pause_ms);
                self.faults.stopped = Some((k, now + pause));
            }
            _ => {
                // Recorded before the signal: the relay may bounce a message for the dead
                // client to another one within microseconds, and that one accepts the bounce
                // only for a client that died.
                let for_good = action == Action::Kill;
                if let Some(blackbox) = &self.limits.blackbox {
                    blackbox.killed(i, for_good);
                }
                self.strike(k, action, at_ms, if for_good { 0 } else { pause_ms });
                if for_good {
                    self.settle(i);
                    self.gone += 1;
                } else {
                    self.faults.restarts.push((i, now + pause));
                }
            }
        }
    }

    /// Cuts a host off the switch for the nemesis's pause: the relay's (`PartitionRelay`), or
    /// a client host drawn with the seed among those with a client still at work.
    fn partition(&mut self, action: Action, now: Instant, at_ms: u64) {
        let (Some(links), Some(nem)) = (self.limits.links.as_ref(), self.limits.nemesis.as_ref())
        else {
            return;
        };
        let hosts = links.client_hosts();
        let mut at_work = vec![false; hosts + 1];
        for i in (0..self.n).filter(|&i| !self.has_reported(i) && !self.is_settled(i)) {
            at_work[links.host_of(i)] = true;
        }
        // A long partition ends connections: never once the drain has begun (every client
        // done), when nothing may die any more.
        if nem.long_partitions && !at_work.contains(&true) {
            return;
        }
        let host = if action == Action::PartitionRelay {
            0
        } else {
            // Drawn over all hosts, then the next one at work (as for clients, below).
            let pick = self.faults.rng.random_range(0..hosts.max(1));
            match (0..hosts)
                .map(|j| 1 + (pick + j) % hosts)
                .find(|&h| at_work[h])
            {
                Some(h) => h,
                None => return,
            }
        };
        if !self.cut(host, now, at_ms, nem.pause) {
            return;
        }
        let pause_ms = nem.pause.as_millis() as u64;
        if nem.long_partitions {
            // The cut-off clients lose their connections: each process ends now (the relay
            // cannot see it go, and must end the connection itself), counted as a death
            // before anything can bounce for it, and a new one carries on after the heal.
            let until = now + nem.pause;
            let cut_off: Vec<usize> = (1..self.children.0.len())
                .filter(|&k| {
                    let c = &self.children.0[k];
                    c.is_open()
                        && !c.killed
                        && c.client().is_some_and(|i| {
                            !self.has_reported(i) && (host == 0 || links.host_of(i) == host)
                        })
                })
                .collect();
            for k in cut_off {
                let i = self.children.0[k].client().unwrap_or(0);
                if let Some(blackbox) = &self.limits.blackbox {
                    blackbox.killed(i, false);
                }
                self.strike(k, Action::Restart, at_ms, pause_ms);
                self.unsettle(i);
                self.faults.restarts.push((i, until));
            }
            self.faults.restarts.sort_by_key(|&(_, at)| at);
        }
    }

    /// Cuts host `host` (0: the relay's) off the switch until `now + lasting`: the link, the
    /// milestone, the report's line. False if `ip` failed (the run then ends).
    fn cut(&mut self, host: usize, now: Instant, at_ms: u64, lasting: std::time::Duration) -> bool {
        let Some(links) = self.limits.links.as_ref() else {
            return false;
        };
        if self.faults.cut.is_some() {
            self.heal(); // (a script's partition while another is in force: one at a time)
        }
        let (role, action) = if host == 0 {
            ("relay".to_string(), Action::PartitionRelay)
        } else {
            (format!("host{host}"), Action::Partition)
        };
        if let Err(e) = links.set(host, false) {
            if self.ending.is_none() {
                self.end(Ending::FaultFailed(format!(
                    "cutting {role} off: {e}; check that iproute2 works here (`ip link`)"
                )));
            }
            return false;
        }
        self.out.milestone(Milestone::Nemesis {
            role: role.clone(),
            action,
        });
        self.faults.cut = Some((host, now + lasting, self.faults.log.len()));
        // A cut after TCP has had its chance to resend what the ones before dropped starts a
        // new run of cuts: its losses are the oldest TCP can still be waiting on.
        if self.faults.retransmits_until.is_none_or(|t| now >= t) {
            self.faults.first_cut = Some(now);
        }
        self.faults.log.push(NemesisEvent {
            action,
            role,
            at_ms,
            for_ms: lasting.as_millis() as u64,
        });
        true
    }

    /// Heals the host that is cut off.
    fn heal(&mut self) {
        let Some((host, _, line)) = self.faults.cut.take() else {
            return;
        };
        let Some(links) = self.limits.links.as_ref() else {
            return;
        };
        let role = self.faults.log[line].role.clone();
        if let Err(e) = links.set(host, true) {
            if self.ending.is_none() {
                self.end(Ending::FaultFailed(format!(
                    "healing {role}: {e}; check that iproute2 works here (`ip link`)"
                )));
            }
            return;
        }
        // How long it really lasted (a script's partition heals one in force first).
        if let Some(t0) = self.released_at {
            let e = &mut self.faults.log[line];
            e.for_ms = e
                .for_ms
                .min((t0.elapsed().as_millis() as u64).saturating_sub(e.at_ms));
        }
        self.out.milestone(Milestone::Nemesis {
            role,
            action: Action::Heal,
        });
        // TCP doubles its retransmission timeout at each loss (up to TCP_RTO_MAX, 120 s) and
        // only an acknowledgement resets it: a segment first lost at s is sent again at
        // s + RTO x (2^k - 1), so the first try after a heal at h comes before
        // h + (h - s) + RTO, and s is no earlier than the current run of partitions began.
        // Until then silence is no stall.
        let now = Instant::now();
        let since = now.duration_since(self.faults.first_cut.unwrap_or(now));
        let wait =
            since.min(std::time::Duration::from_secs(120)) + std::time::Duration::from_secs(1);
        self.faults.retransmits_until = Some(now + wait);
        // Nor is that time the relay's to answer for: the work gets half its bound again
        // once TCP may be back (the nemesis itself still rests by the first bound).
        if self.released_at.is_some() {
            self.deadline = self.deadline.max(now + wait + self.limits.deadline / 2);
        }
    }

    /// Every client at work finished phase `p`: the script's fault lines after it strike,
    /// then phase `p + 1` starts (once restarted processes have registered).
    pub(super) fn strike_script_faults(&mut self, p: usize) -> Result<(), SuperviseError> {
        let at_ms = self
            .released_at
            .map_or(0, |t0| t0.elapsed().as_millis() as u64);
        let limits = self.limits;
        for f in limits.script_faults.iter().filter(|f| f.after_phase == p) {
            let (action, who) = match f.fault {
                Fault::Stop(i, _) => (Action::Stop, Some(i)),
                Fault::Cont(i) => (Action::Cont, Some(i)),
                Fault::Kill(i) => (Action::Kill, Some(i)),
                Fault::Restart(i) => (Action::Restart, Some(i)),
                Fault::KillRelay => (Action::Relay, None),
                Fault::Partition(who, d) => {
                    let host = match (who, self.limits.links.as_ref()) {
                        (_, None) => continue, // (refused before the run: it needs --hosts)
                        (None, Some(_)) => 0,
                        (Some(i), Some(links)) => links.host_of(i),
                    };
                    self.cut(host, Instant::now(), at_ms, d);
                    continue;
                }
            };
            let k = match who {
                None => 0,
                Some(i) => match self.children.live_process_of(i) {
                    Some(k) => k,
                    None => continue,
                },
            };
            let mut for_ms = 0;
            match f.fault {
                Fault::Stop(_, Some(d)) => {
                    self.faults.conts.push((k, Instant::now() + d));
                    for_ms = d.as_millis() as u64;
                }
                Fault::Stop(_, None) => self.faults.held.push(k),
                Fault::Cont(_) => {
                    self.faults.held.retain(|&h| h != k);
                    // How long it was stopped, on its stop's line.
                    let role = &self.children.0[k].name;
                    if let Some(e) = self
                        .faults
                        .log
                        .iter_mut()
                        .rev()
                        .find(|e| e.action == Action::Stop && &e.role == role)
                    {
                        e.for_ms = at_ms.saturating_sub(e.at_ms);
                    }
                }
                _ => {}
            }
            self.strike(k, action, at_ms, for_ms);
            match f.fault {
                Fault::Kill(i) => {
                    self.gone += 1;
                    self.settle(i);
                }
                Fault::Restart(i) => {
                    self.respawn(i, p + 1)?;
                    self.faults.awaiting_ready += 1;
                }
                Fault::KillRelay => self.faults.relay_killed = true,
                Fault::Stop(..) | Fault::Cont(_) | Fault::Partition(..) => {}
            }
        }
        if self.faults.awaiting_ready > 0 || self.faults.relay_killed {
            self.faults.release_after = (!self.faults.relay_killed).then_some(p + 1);
        } else {
            self.start_phase(p + 1);
        }
        Ok(())
    }
}
