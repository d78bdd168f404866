//! Scripted scenarios: a small line-based format (docs/scenarios.md).
//!
//! ```text
//! clients ClientA ClientB            # the client processes
//! absent  ghost                      # names nobody holds: sends to them must bounce
//! ClientA -> ClientB "1"             # literal text
//! ClientB -> ClientA 64 bytes x10    # sized, verifiable payloads, repeated
//! barrier                            # everyone waits until the phase is delivered
//! ClientA -> ghost "anyone?"
//! stop ClientB 200ms                 # process faults, each at a barrier: SIGSTOP, SIGCONT later
//! stop ClientA                       # SIGSTOP until a later `cont ClientA`
//! cont ClientA
//! restart ClientB                    # SIGKILL, then a new process carries on under the name
//! kill ClientA                       # SIGKILL for good (no line may name it after this)
//! kill relay                         # SIGKILL the relay: the run ends here
//! ```

use std::fmt;
use std::path::Path;

use crate::payload::PayloadSize;

/// A payload in a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Exactly these bytes.
    Literal(Vec<u8>),
    /// Seeded filler with a verification header, of this size or range.
    Sized(PayloadSize),
}

/// One send line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// Sender's index in `names`.
    pub from: usize,
    /// Receiver's index in `names` (an absent name's index is `>= clients`).
    pub to: usize,
    /// Index in `bodies`.
    pub body: usize,
    /// How many times.
    pub count: u64,
    /// Line in the file.
    pub line: usize,
}

/// A process fault in a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGSTOP the client; SIGCONT it after the duration, or (None) at a later `cont` line.
    /// The phases in between run without it: nobody may wait on it there.
    Stop(usize, Option<std::time::Duration>),
    /// SIGCONT a client stopped by `stop NAME`.
    Cont(usize),
    /// SIGKILL the client for good.
    Kill(usize),
    /// SIGKILL the client, and start a new process under its name for the next phase.
    Restart(usize),
    /// SIGKILL the relay.
    KillRelay,
    /// With `--hosts`: cut the client's host (None: the relay's) off the switch for the
    /// duration; the next phase starts at once, across the partition.
    Partition(Option<usize>, std::time::Duration),
}

/// A fault line: it ends a phase, and strikes once every client has finished it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultLine {
    /// The phase it follows.
    pub after_phase: usize,
    /// What it does.
    pub fault: Fault,
    /// Line in the file.
    pub line: usize,
}

/// A parsed script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Client names first (`0..clients`), then absent names.
    pub names: Vec<String>,
    /// How many of `names` are clients.
    pub clients: usize,
    /// Sends, phase by phase (phases are separated by `barrier`).
    pub phases: Vec<Vec<Send>>,
    /// Payloads.
    pub bodies: Vec<Body>,
    /// `seed N`, if the script fixes one.
    pub seed: Option<u64>,
    /// Process faults, in order.
    pub faults: Vec<FaultLine>,
}

/// `200ms`, `2s`: a duration in a script.
fn parse_duration(w: &str) -> Option<std::time::Duration> {
    let (num, unit) = w.split_at(w.find(|c: char| !c.is_ascii_digit())?);
    let v: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(std::time::Duration::from_millis(v)),
        "s" => Some(std::time::Duration::from_secs(v)),
        _ => None,
    }
}

/// A script error, naming the file, line and column and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScriptError {
    /// File name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What was expected and what was found.
    pub msg: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            // Not a place in the file: the file itself (it could not be read).
            0 => write!(f, "{}: {}", self.file, self.msg),
            _ => write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Arrow,
    Text(Vec<u8>),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "`{w}`"),
            Tok::Arrow => f.write_str("`->`"),
            Tok::Text(t) => write!(f, "\"{}\"", String::from_utf8_lossy(t)),
        }
    }
}

/// Splits a line into tokens with their 1-based columns; `#` starts a comment.
fn tokenize(line: &str) -> Result<Vec<(usize, Tok)>, (usize, String)> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' {
            break;
        } else if c == b'"' {
            let start = i;
            i += 1;
            let mut text = Vec::new();
            loop {
                let Some(&c) = b.get(i) else {
                    return Err((
                        start + 1,
                        "unterminated string: expected a closing `\"`".into(),
                    ));
                };
                i += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        let Some(&e) = b.get(i) else {
                            return Err((i, "expected an escape after `\\`".into()));
                        };
                        i += 1;
                        match e {
                            b'n' => text.push(b'\n'),
                            b't' => text.push(b'\t'),
                            b'\\' => text.push(b'\\'),
                            b'"' => text.push(b'"'),
                            b'x' => {
                                let hex = line
                                    .get(i..i + 2)
                                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                                let Some(v) = hex else {
                                    return Err((
                                        i + 1,
                                        "expected two hex digits after `\\x`".into(),
                                    ));
                                };
                                text.push(v);
                                i += 2;
                            }
                            other => {
                                return Err((
                                    i,
                                    format!(
                                        "unknown escape `\\{}`; use \\n \\t \\\\ \\\" or \\xHH",
                                        other as char
                                    ),
                                ))
                            }
                        }
                    }
                    _ => text.push(c),
                }
            }
            out.push((start + 1, Tok::Text(text)));
        } else if line[i..].starts_with("->") {
            out.push((i + 1, Tok::Arrow));
            i += 2;
        } else {
            let start = i;
            while i < b.len()
                && !b[i].is_ascii_whitespace()
                && b[i] != b'#'
                && b[i] != b'"'
                && !line[i..].starts_with("->")
            {
                i += 1;
            }
            out.push((start + 1, Tok::Word(line[start..i].to_string())));
        }
    }
    Ok(out)
}

/// A send line before names are resolved: line, phase, (column, sender), (column, receiver),
/// body index, count.
type RawSend = (usize, usize, (usize, String), (usize, String), usize, u64);

/// A fault line before names are resolved: line, phase, (column, word, target), duration.
type RawFault = (
    usize,
    usize,
    (usize, String, String),
    Option<std::time::Duration>,
);

fn valid_name(n: &str) -> bool {
    (1..=32).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

impl Script {
    /// The payload sizes its messages can have.
    pub fn sizes(&self) -> crate::payload::Sizes {
        let mut z = crate::payload::Sizes {
            min: usize::MAX,
            ..Default::default()
        };
        for b in &self.bodies {
            match b {
                Body::Literal(_) => z.literal = true,
                Body::Sized(p) => {
                    z.sized = true;
                    z.min = z.min.min(p.min);
                    z.max = z.max.max(p.max);
                }
            }
        }
        if !z.sized {
            z.min = 0;
        }
        z
    }

    /// Reads and parses a script file.
    pub fn load(path: &Path) -> Result<Script, ScriptError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScriptError {
            file: file.clone(),
            line: 0,
            col: 0,
            msg: format!("cannot read the script: {e}"),
        })?;
        Script::parse(&file, &text)
    }

    /// Parses script text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Script, ScriptError> {
        let mut p = Parser {
            file,
            s: Script {
                names: Vec::new(),
                clients: 0,
                phases: vec![Vec::new()],
                bodies: Vec::new(),
                seed: None,
                faults: Vec::new(),
            },
            absent: Vec::new(),
            raw_sends: Vec::new(),
            raw_faults: Vec::new(),
            phase: 0,
        };
        for (ln, line) in text.lines().enumerate() {
            p.line(ln + 1, line)?;
        }
        p.finish()
    }

    /// Nobody sends to, or as, a client killed for good; nothing happens after `kill relay`.
    fn check_deaths(&self, file: &str) -> Result<(), ScriptError> {
        for f in &self.faults {
            let later = self.phases.iter().skip(f.after_phase + 1).flatten();
            let faults_after = self.faults.iter().filter(|g| g.line > f.line);
            let err = |line: usize, msg: String| ScriptError {
                file: file.to_string(),
                line,
                col: 1,
                msg,
            };
            match f.fault {
                Fault::Kill(i) => {
                    let name = &self.names[i];
                    if let Some(s) = later.clone().find(|s| s.from == i || s.to == i) {
                        return Err(err(s.line, format!("`{name}` was killed at line {}: nothing can go to or from it after that (use `restart {name}` to bring it back)", f.line)));
                    }
                    if let Some(g) = faults_after.clone().find(|g| {
                        matches!(g.fault, Fault::Kill(j) | Fault::Restart(j) | Fault::Stop(j, _) if j == i)
                    }) {
                        return Err(err(g.line, format!("`{name}` was killed at line {}", f.line)));
                    }
                }
                Fault::KillRelay => {
                    if let Some(s) = later.clone().next() {
                        return Err(err(
                            s.line,
                            format!(
                                "the relay was killed at line {}: the run ends there",
                                f.line
                            ),
                        ));
                    }
                    if let Some(g) = faults_after.clone().next() {
                        return Err(err(
                            g.line,
                            format!(
                                "the relay was killed at line {}: the run ends there",
                                f.line
                            ),
                        ));
                    }
                }
                Fault::Stop(i, None) => {
                    let name = &self.names[i];
                    let cont = faults_after.clone().find(|g| g.fault == Fault::Cont(i));
                    let Some(cont) = cont else {
                        return Err(err(f.line, format!("`{name}` is stopped here and never continued: add `cont {name}` later, or give a duration (`stop {name} 200ms`)")));
                    };
                    if let Some(g) = faults_after.clone().filter(|g| g.line < cont.line).find(|g| {
                        matches!(g.fault, Fault::Kill(j) | Fault::Restart(j) | Fault::Stop(j, _) if j == i)
                    }) {
                        return Err(err(g.line, format!("`{name}` is stopped (line {}) until line {}", f.line, cont.line)));
                    }
                }
                Fault::Cont(i) => {
                    let earlier = self.faults.iter().rev().filter(|g| g.line < f.line).find(|g| {
                        matches!(g.fault, Fault::Stop(j, _) | Fault::Cont(j) | Fault::Kill(j) | Fault::Restart(j) if j == i)
                    });
                    if !matches!(earlier.map(|g| g.fault), Some(Fault::Stop(_, None))) {
                        let name = &self.names[i];
                        return Err(err(
                            f.line,
                            format!(
                                "`cont {name}` needs an earlier `stop {name}` (without a duration)"
                            ),
                        ));
                    }
                }
                Fault::Stop(_, Some(_)) | Fault::Restart(_) | Fault::Partition(..) => {}
            }
        }
        Ok(())
    }

    /// Total messages sent.
    pub fn total(&self) -> u64 {
        self.phases.iter().flatten().map(|s| s.count).sum()
    }

    /// The largest payload any send may have.
    pub fn max_payload(&self) -> usize {
        self.bodies
            .iter()
            .map(|b| match b {
                Body::Literal(t) => t.len(),
                Body::Sized(p) => p.max,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Where an error is: the file and line, to which a column is added.
struct At<'f> {
    file: &'f str,
    line: usize,
}

impl At<'_> {
    fn err(&self, col: usize, msg: String) -> ScriptError {
        ScriptError {
            file: self.file.to_string(),
            line: self.line,
            col,
            msg,
        }
    }
}

/// A script being read, line by line. Names are resolved at the end, once every `clients` and
/// `absent` line is read (absent names join the list after the clients).
struct Parser<'f> {
    file: &'f str,
    /// What is known so far (names of clients, phases, bodies, seed).
    s: Script,
    /// Names declared `absent`: sends to them must bounce.
    absent: Vec<String>,
    /// Sends and faults, their names still words.
    raw_sends: Vec<RawSend>,
    raw_faults: Vec<RawFault>,
    /// The phase the next send belongs to.
    phase: usize,
}

impl Parser<'_> {
    /// One line: a declaration, a seed, a fault, a barrier or a send.
    fn line(&mut self, ln: usize, line: &str) -> Result<(), ScriptError> {
        let at = At {
            file: self.file,
            line: ln,
        };
        let toks = tokenize(line).map_err(|(col, msg)| at.err(col, msg))?;
        let Some((col0, first)) = toks.first().cloned() else {
            return Ok(());
        };
        let end_col = line.trim_end().len() + 1;
        match first {
            Tok::Word(w) if w == "clients" || w == "absent" => {
                self.names(&at, &w, &toks, col0, end_col)
            }
            Tok::Word(w) if w == "seed" => self.seed(&at, &toks, end_col),
            Tok::Word(w)
                if matches!(
                    w.as_str(),
                    "stop" | "cont" | "kill" | "restart" | "partition"
                ) && !matches!(toks.get(1), Some((_, Tok::Arrow))) =>
            {
                self.fault(&at, &w, &toks, end_col)
            }
            Tok::Word(w) if w == "barrier" || w == "---" => {
                if let Some((col, t)) = toks.get(1) {
                    return Err(at.err(
                        *col,
                        format!("expected the end of the line after `{w}`, found {t}"),
                    ));
                }
                self.next_phase();
                Ok(())
            }
            Tok::Word(from) => self.send(&at, from, &toks, col0, end_col),
            t => Err(at.err(
                col0,
                format!("expected a keyword or a sender name, found {t}"),
            )),
        }
    }

    fn next_phase(&mut self) {
        self.phase += 1;
        self.s.phases.push(Vec::new());
    }

    /// `clients NAME...` or `absent NAME...`.
    fn names(
        &mut self,
        at: &At<'_>,
        w: &str,
        toks: &[(usize, Tok)],
        col0: usize,
        end_col: usize,
    ) -> Result<(), ScriptError> {
        if toks.len() < 2 {
            return Err(at.err(end_col, format!("expected at least one name after `{w}`")));
        }
        if w == "clients" && !self.absent.is_empty() {
            return Err(at.err(
                col0,
                "`clients` lines must come before `absent` lines".into(),
            ));
        }
        if !self.raw_sends.is_empty() {
            return Err(at.err(col0, format!("`{w}` must come before the first send")));
        }
        for (col, t) in &toks[1..] {
            let Tok::Word(name) = t else {
                return Err(at.err(*col, format!("expected a name, found {t}")));
            };
            if !valid_name(name) {
                return Err(at.err(
                    *col,
                    format!("`{name}` is not a valid name: 1 to 32 of A-Z a-z 0-9 _ . -"),
                ));
            }
            if self.s.names.contains(name) || self.absent.contains(name) {
                return Err(at.err(*col, format!("`{name}` is declared twice")));
            }
            if w == "clients" {
                self.s.names.push(name.clone());
            } else {
                self.absent.push(name.clone());
            }
        }
        Ok(())
    }

    /// `seed N`.
    fn seed(
        &mut self,
        at: &At<'_>,
        toks: &[(usize, Tok)],
        end_col: usize,
    ) -> Result<(), ScriptError> {
        match toks.get(1) {
            Some((col, Tok::Word(v))) => {
                self.s.seed = Some(v.parse().map_err(|_| {
                    at.err(*col, format!("expected a number after `seed`, found `{v}`"))
                })?);
            }
            Some((col, t)) => {
                return Err(at.err(*col, format!("expected a number after `seed`, found {t}")))
            }
            None => return Err(at.err(end_col, "expected a number after `seed`".into())),
        }
        Ok(())
    }

    /// `stop NAME [DUR]`, `cont NAME`, `kill NAME`, `restart NAME`, `partition NAME|relay DUR`:
    /// each ends a phase.
    fn fault(
        &mut self,
        at: &At<'_>,
        w: &str,
        toks: &[(usize, Tok)],
        end_col: usize,
    ) -> Result<(), ScriptError> {
        let target = match toks.get(1) {
            Some((_, Tok::Word(t))) => t.clone(),
            Some((col, t)) => {
                return Err(at.err(
                    *col,
                    format!("expected a client name after `{w}`, found {t}"),
                ))
            }
            None => return Err(at.err(end_col, format!("expected a client name after `{w}`"))),
        };
        let mut rest = 2;
        let dur = match (w, toks.get(2)) {
            ("stop", Some((col, Tok::Word(d)))) => {
                rest = 3;
                Some(parse_duration(d).ok_or_else(|| {
                    at.err(*col, format!("expected a duration like 200ms or 2s (or nothing, and a later `cont {target}`), found `{d}`"))
                })?)
            }
            ("partition", Some((col, Tok::Word(d)))) => {
                rest = 3;
                Some(parse_duration(d).ok_or_else(|| {
                    at.err(
                        *col,
                        format!(
                            "expected how long the partition lasts, like 500ms or 2s, found `{d}`"
                        ),
                    )
                })?)
            }
            ("partition", _) => {
                return Err(at.err(
                    end_col,
                    format!(
                    "expected how long the partition lasts after `partition {target}` (500ms, 2s)"
                ),
                ))
            }
            _ => None,
        };
        if let Some((col, t)) = toks.get(rest) {
            return Err(at.err(*col, format!("expected the end of the line, found {t}")));
        }
        self.raw_faults
            .push((at.line, self.phase, (toks[1].0, w.to_string(), target), dur));
        self.next_phase();
        Ok(())
    }

    /// `FROM -> TO BODY [xN]`.
    fn send(
        &mut self,
        at: &At<'_>,
        from: String,
        toks: &[(usize, Tok)],
        col0: usize,
        end_col: usize,
    ) -> Result<(), ScriptError> {
        // FROM -> TO BODY [xN]
        match toks.get(1) {
            Some((_, Tok::Arrow)) => {}
            Some((col, t)) => {
                return Err(at.err(*col, format!("expected `->` after `{from}`, found {t}")))
            }
            None => {
                return Err(at.err(
                    end_col,
                    format!(
                    "expected `->` after `{from}` (or a keyword: clients, absent, seed, barrier)"
                ),
                ))
            }
        }
        let (to_col, to) = match toks.get(2) {
            Some((col, Tok::Word(to))) => (*col, to.clone()),
            Some((col, t)) => {
                return Err(at.err(
                    *col,
                    format!("expected a receiver name after `->`, found {t}"),
                ))
            }
            None => return Err(at.err(end_col, "expected a receiver name after `->`".into())),
        };
        let (body, next) = match toks.get(3) {
            Some((_, Tok::Text(t))) => (Body::Literal(t.clone()), 4),
            Some((col, Tok::Word(size))) => {
                match toks.get(4) {
                    Some((_, Tok::Word(b))) if b == "bytes" || b == "B" => {}
                    Some((c, t)) => {
                        return Err(
                            at.err(*c, format!("expected `bytes` after the size, found {t}"))
                        )
                    }
                    None => return Err(at.err(end_col, "expected `bytes` after the size".into())),
                }
                let p = PayloadSize::parse(size)
                    .map_err(|e| at.err(*col, format!("expected a size or MIN..MAX: {e}")))?;
                (Body::Sized(p), 5)
            }
            Some((col, t)) => {
                return Err(at.err(
                    *col,
                    format!("expected a payload (\"text\" or SIZE bytes), found {t}"),
                ))
            }
            None => {
                return Err(at.err(
                    end_col,
                    "expected a payload (\"text\" or SIZE bytes)".into(),
                ))
            }
        };
        let count = match toks.get(next) {
            None => 1,
            Some((col, Tok::Word(x))) if x.starts_with('x') => x[1..]
                .parse::<u64>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    at.err(
                        *col,
                        format!("expected a repetition like x1000, found `{x}`"),
                    )
                })?,
            Some((col, t)) => {
                return Err(at.err(
                    *col,
                    format!("expected a repetition like x1000 or the end of the line, found {t}"),
                ))
            }
        };
        if let Some((col, t)) = toks.get(next + 1) {
            return Err(at.err(*col, format!("expected the end of the line, found {t}")));
        }
        let bi = match self.s.bodies.iter().position(|b| *b == body) {
            Some(i) => i,
            None => {
                self.s.bodies.push(body);
                self.s.bodies.len() - 1
            }
        };
        self.raw_sends
            .push((at.line, self.phase, (col0, from), (to_col, to), bi, count));
        Ok(())
    }

    /// Resolves every name the sends and faults used, and checks what deaths allow.
    fn finish(self) -> Result<Script, ScriptError> {
        let mut s = self.s;
        if s.names.is_empty() {
            return Err(ScriptError {
                file: self.file.to_string(),
                line: 1,
                col: 1,
                msg: "expected a `clients NAME...` line: a script needs at least one client".into(),
            });
        }
        s.clients = s.names.len();
        s.names.extend(self.absent);
        for (ln, phase, (fcol, from), (tcol, to), body, count) in self.raw_sends {
            let err = |col: usize, msg: String| ScriptError {
                file: self.file.to_string(),
                line: ln,
                col,
                msg,
            };
            let f = s.names.iter().position(|n| *n == from).ok_or_else(|| {
                err(
                    fcol,
                    format!("unknown sender `{from}`; declare it on the `clients` line"),
                )
            })?;
            if f >= s.clients {
                return Err(err(fcol, format!("`{from}` is absent: it cannot send")));
            }
            let t = s.names.iter().position(|n| *n == to).ok_or_else(|| {
                err(tcol, format!("unknown receiver `{to}`; declare it with `clients` (or `absent`, to expect bounces)"))
            })?;
            s.phases[phase].push(Send {
                from: f,
                to: t,
                body,
                count,
                line: ln,
            });
        }
        for (ln, after_phase, (col, word, target), dur) in self.raw_faults {
            let err = |msg: String| ScriptError {
                file: self.file.to_string(),
                line: ln,
                col,
                msg,
            };
            let relay = target == "relay" && !s.names.contains(&target);
            let fault = if word == "kill" && relay {
                Fault::KillRelay
            } else if word == "partition" && relay {
                Fault::Partition(None, dur.unwrap_or_default())
            } else {
                let i = s.names[..s.clients]
                    .iter()
                    .position(|n| *n == target)
                    .ok_or_else(|| err(format!("`{target}` is not a client of this script")))?;
                match word.as_str() {
                    "stop" => Fault::Stop(i, dur),
                    "cont" => Fault::Cont(i),
                    "kill" => Fault::Kill(i),
                    "partition" => Fault::Partition(Some(i), dur.unwrap_or_default()),
                    _ => Fault::Restart(i),
                }
            };
            s.faults.push(FaultLine {
                after_phase,
                fault,
                line: ln,
            });
        }
        s.check_deaths(self.file)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTICLE: &str = "# the article\nclients ClientA ClientB\nClientA -> ClientB \"1\"\nClientB -> ClientA \"2\"\n";

    #[test]
    fn partition_lines_name_a_client_or_the_relay_and_a_duration() {
        let s = Script::parse(
            "p.scn",
            "clients a b\na -> b \"1\"\npartition b 300ms\nb -> a \"2\"\npartition relay 1s\n",
        )
        .unwrap();
        let faults: Vec<_> = s.faults.iter().map(|f| (f.after_phase, f.fault)).collect();
        let ms = std::time::Duration::from_millis;
        assert_eq!(
            faults,
            vec![
                (0, Fault::Partition(Some(1), ms(300))),
                (1, Fault::Partition(None, ms(1000)))
            ]
        );
        let e = Script::parse("p.scn", "clients a b\npartition a\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 12));
        assert!(e.msg.contains("how long the partition lasts"), "{}", e.msg);
        let e = Script::parse("p.scn", "clients a b\npartition a soon\n").unwrap_err();
        assert!(e.msg.contains("found `soon`"), "{}", e.msg);
    }

    #[test]
    fn fault_lines_end_a_phase_and_name_clients() {
        let s = Script::parse(
            "f.scn",
            "clients a b kill\na -> b \"1\"\nstop b 200ms\nkill -> a \"a client named kill\"\nrestart b\nkill a\nkill relay\n",
        )
        .unwrap();
        assert_eq!(s.phases.len(), 5);
        let faults: Vec<_> = s
            .faults
            .iter()
            .map(|f| (f.after_phase, f.fault, f.line))
            .collect();
        assert_eq!(
            faults,
            vec![
                (
                    0,
                    Fault::Stop(1, Some(std::time::Duration::from_millis(200))),
                    3
                ),
                (1, Fault::Restart(1), 5),
                (2, Fault::Kill(0), 6),
                (3, Fault::KillRelay, 7),
            ]
        );
        assert_eq!(
            s.phases[1][0].from, 2,
            "`kill -> a` is a send by the client named kill"
        );
        for (text, at, msg) in [
            (
                "clients a b\nkill a\nb -> a \"x\"\n",
                (3, 1),
                "`a` was killed at line 2",
            ),
            (
                "clients a b\nkill relay\na -> b \"x\"\n",
                (3, 1),
                "the relay was killed at line 2",
            ),
            ("clients a b\nstop a\n", (2, 1), "never continued"),
            ("clients a b\ncont a\n", (2, 1), "needs an earlier `stop a`"),
            ("clients a b\nstop a soon\n", (2, 8), "expected a duration"),
            (
                "clients a b\nrestart ghost\n",
                (2, 9),
                "`ghost` is not a client",
            ),
            (
                "clients a b\nkill a b\n",
                (2, 8),
                "expected the end of the line",
            ),
        ] {
            let e = Script::parse("f.scn", text).unwrap_err();
            assert_eq!((e.line, e.col), at, "{text:?}: {e}");
            assert!(e.msg.contains(msg), "{text:?}: {e}");
        }
    }

    #[test]
    fn parses_the_article() {
        let s = Script::parse("a.scn", ARTICLE).unwrap();
        assert_eq!(s.names, ["ClientA", "ClientB"]);
        assert_eq!(s.clients, 2);
        assert_eq!(s.phases.len(), 1);
        assert_eq!(s.phases[0].len(), 2);
        assert_eq!(s.bodies[s.phases[0][0].body], Body::Literal(b"1".to_vec()));
        assert_eq!(s.total(), 2);
    }

    #[test]
    fn parses_sizes_repetition_barriers_absent_and_escapes() {
        let s = Script::parse(
            "x.scn",
            "clients a b\nabsent ghost\nseed 9\na -> b 64 bytes x1000\nbarrier\nb -> a 0..10 bytes x2 # c\na -> ghost \"q\\\"\\x41\\n\"\n",
        )
        .unwrap();
        assert_eq!(s.clients, 2);
        assert_eq!(s.names, ["a", "b", "ghost"]);
        assert_eq!(s.seed, Some(9));
        assert_eq!(s.phases.len(), 2);
        assert_eq!(s.phases[0][0].count, 1000);
        assert_eq!(
            s.bodies[s.phases[1][0].body],
            Body::Sized(PayloadSize { min: 0, max: 10 })
        );
        assert_eq!(
            s.bodies[s.phases[1][1].body],
            Body::Literal(b"q\"A\n".to_vec())
        );
        assert_eq!(s.phases[1][1].to, 2);
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases = [
            ("clients a b\na => b \"x\"\n", 2, 3, "expected `->`"),
            ("clients a b\na -> c \"x\"\n", 2, 6, "unknown receiver `c`"),
            ("clients a b\nz -> a \"x\"\n", 2, 1, "unknown sender `z`"),
            ("clients a b\na -> b \"x\n", 2, 8, "unterminated string"),
            ("clients a b\na -> b 64 byts\n", 2, 11, "expected `bytes`"),
            ("clients a b\na -> b \"x\" x0\n", 2, 12, "repetition"),
            ("clients a a\n", 1, 11, "declared twice"),
            ("clients a b\nabsent g\ng -> a \"x\"\n", 3, 1, "absent"),
            ("a -> b \"x\"\n", 1, 1, "clients"),
            ("clients bad!name\n", 1, 9, "not a valid name"),
            ("clients a b\nbarrier now\n", 2, 9, "end of the line"),
        ];
        for (text, line, col, want) in cases {
            let e = Script::parse("t.scn", text).unwrap_err();
            assert_eq!((e.line, e.col), (line, col), "{text:?}: {e}");
            assert!(e.msg.contains(want), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("t.scn:{line}:{col}: ")));
        }
    }
}
