//! The pictures of a results folder: latency.svg and rate.svg (charts, drawn with plotters'
//! SVG backend) and sequence.svg (a space-time diagram of a traced run, drawn by hand: no
//! charting library draws one).

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::record::ClientReport;
use crate::trace::Timeline;
use crate::verify::RATE_BUCKET_NS;

const W: u32 = 900;
const FONT: &str = "sans-serif";

/// A count for an axis label: 950, 12k, 3.4M.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The legend every chart here draws: a box at `at`, on translucent white, with a black border.
pub fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    c: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    c.configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// A legend key for a line series: a short stroke in the series' style.
pub fn line_key<S: Into<ShapeStyle>>(style: S) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    let style = style.into();
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}

/// A chart's drawing errors become a short note in the picture's place.
pub fn or_note(r: Result<(), String>, svg: String, what: &str) -> String {
    match r {
        Ok(()) => svg,
        Err(e) => note_svg(&format!("{what}: could not be drawn ({e})")),
    }
}

/// An SVG holding one line of text (for a picture with nothing to show).
pub fn note_svg(text: &str) -> String {
    format!(
        "<svg width=\"{W}\" height=\"80\" viewBox=\"0 0 {W} 80\" xmlns=\"http://www.w3.org/2000/svg\">\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
<text x=\"20\" y=\"45\" font-family=\"{FONT}\" font-size=\"16\">{}</text></svg>\n",
        escape(text)
    )
}

/// Text for SVG and HTML.
pub fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The buckets' common width: 10 ms, or the widest a client needed in a long run.
pub fn bucket_width(reports: &[Option<ClientReport>]) -> u64 {
    reports
        .iter()
        .flatten()
        .map(|r| r.bucket_ns)
        .max()
        .unwrap_or(RATE_BUCKET_NS)
        .max(RATE_BUCKET_NS)
}

/// Per absolute bucket of `width` ns since `t0_ns`: summed over clients.
fn buckets<T: Copy, A: Default + Copy>(
    reports: &[Option<ClientReport>],
    t0_ns: u64,
    width: u64,
    of: impl Fn(&ClientReport) -> Vec<(u32, T)>,
    mut add: impl FnMut(&mut A, T),
) -> BTreeMap<u64, A> {
    let mut m = BTreeMap::new();
    for r in reports.iter().flatten() {
        for (b, v) in of(r) {
            let at = (r.rate_clock0_ns + u64::from(b) * r.bucket_ns).saturating_sub(t0_ns);
            add(m.entry(at / width).or_default(), v);
        }
    }
    m
}

/// A bucket width as a person reads it: "10 ms", "1.3 s".
fn width_label(ns: u64) -> String {
    if ns < 1_000_000_000 {
        format!("{} ms", ns / 1_000_000)
    } else {
        format!("{:.1} s", ns as f64 / 1e9)
    }
}

/// latency.svg: the distribution by percentile (HDR style, both axes stretched toward the
/// tail) and the latency over the run (mean and max per bucket: 10 ms, wider in long runs).
pub fn latency_svg(
    hist: Option<&Histogram<u64>>,
    reports: &[Option<ClientReport>],
    t0_ns: u64,
    what: &str,
) -> String {
    let Some(h) = hist.filter(|h| !h.is_empty()) else {
        return note_svg("No latency measured: payloads under 32 bytes carry no send time.");
    };
    let width = bucket_width(reports);
    let over_time = buckets(
        reports,
        t0_ns,
        width,
        |r| {
            r.latency
                .iter()
                .map(|&(b, n, sum, max)| (b, (n, sum, max)))
                .collect()
        },
        |a: &mut (u64, u64, u64), (n, sum, max)| {
            a.0 += u64::from(n);
            a.1 += sum;
            a.2 = a.2.max(max);
        },
    );
    let axis = LogUs::of(h);
    let mut svg = String::new();
    let r = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (W, 760)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(380);
        latency_by_percentile(&top, h, what, &axis)?;
        latency_over_time(&bottom, &over_time, width, &axis)?;
        root.present()?;
        Ok(())
    })()
    .map_err(|e| e.to_string());
    or_note(r, svg, "latency.svg")
}

/// A drawing area of an SVG being made.
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Latency on a log axis drawn by hand (log10 of µs on a linear axis): one label per power of
/// ten reads better than plotters' log-scale labels, which crowd.
struct LogUs {
    /// The axis's ends, in log10 µs.
    lo: f64,
    hi: f64,
    /// Labels: one per power of ten.
    decades: usize,
}

impl LogUs {
    /// An axis that holds every value of `h`.
    fn of(h: &Histogram<u64>) -> LogUs {
        let lo = Self::log(h.min().max(1)).floor();
        let hi = Self::log(h.max()).ceil().max(lo + 1.0);
        LogUs {
            lo,
            hi,
            decades: (hi - lo) as usize + 1,
        }
    }

    /// log10 of `ns` in µs.
    fn log(ns: u64) -> f64 {
        (ns as f64 / 1000.0).max(0.01).log10()
    }

    /// Where `ns` goes on the axis (at least its bottom).
    fn y(&self, ns: u64) -> f64 {
        Self::log(ns.max(1)).max(self.lo)
    }

    /// A label on the axis.
    fn label(y: &f64) -> String {
        let v = 10f64.powf(*y);
        if v >= 1e6 {
            format!("{:.0} s", v / 1e6)
        } else if v >= 1e3 {
            format!("{:.0} ms", v / 1e3)
        } else if v >= 1.0 {
            format!("{v:.0} µs")
        } else {
            format!("{v:.2} µs")
        }
    }
}

/// The distribution: latency against percentile, x = -log10(1 - q) (0 is 0%, 1 is 90%, 2 is
/// 99%, ...), with p50, p99 and p99.9 marked.
fn latency_by_percentile(
    area: &Area<'_>,
    h: &Histogram<u64>,
    what: &str,
    axis: &LogUs,
) -> Result<(), Box<dyn std::error::Error>> {
    let (lo, hi) = (axis.lo, axis.hi);
    let nines = ((h.len() as f64).log10()).clamp(1.0, 6.0);
    let mut c = ChartBuilder::on(area)
        .caption(
            format!("Latency by percentile ({what}, {} messages)", h.len()),
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..nines, lo..hi)?;
    c.configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (log scale)")
        .y_labels(axis.decades)
        .y_label_formatter(&LogUs::label)
        .x_labels(nines as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            if p < 99.0 {
                format!("{p:.0}%")
            } else {
                format!("{p:.*}%", (x.round() as usize).saturating_sub(2))
            }
        })
        .draw()?;
    let pts: Vec<(f64, f64)> = (0..=(nines * 100.0) as usize)
        .map(|k| {
            let x = k as f64 / 100.0;
            let q = (1.0 - 10f64.powf(-x)).min(1.0);
            (x, axis.y(h.value_at_quantile(q)))
        })
        .collect();
    c.draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))?;
    for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
        let x = -(1.0f64 - q).log10();
        if x <= nines {
            let v = h.value_at_quantile(q).max(1);
            let y = axis.y(v);
            c.draw_series(std::iter::once(Circle::new((x, y), 4, BLUE.filled())))?;
            c.draw_series(std::iter::once(Text::new(
                format!("{label} {:.1} µs", v as f64 / 1000.0),
                (x + 0.03, y - (hi - lo) * 0.02),
                (FONT, 14).into_font(),
            )))?;
        }
    }
    Ok(())
}

/// Latency over the run: the mean and the max per time bucket.
fn latency_over_time(
    area: &Area<'_>,
    over_time: &BTreeMap<u64, (u64, u64, u64)>,
    width: u64,
    axis: &LogUs,
) -> Result<(), Box<dyn std::error::Error>> {
    let width_ms = width as f64 / 1e6;
    let end_ms = over_time.keys().last().map_or(1, |b| b + 1) as f64 * width_ms;
    let mut c = ChartBuilder::on(area)
        .caption(
            format!("Latency over the run (per {})", width_label(width)),
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_ms, axis.lo..axis.hi)?;
    c.configure_mesh()
        .x_desc("time since the start barrier (ms)")
        .y_desc("latency (log scale)")
        .y_labels(axis.decades)
        .y_label_formatter(&LogUs::label)
        .draw()?;
    let point = |b: &u64| (*b as f64 + 0.5) * width_ms;
    c.draw_series(LineSeries::new(
        over_time
            .iter()
            .filter(|(_, a)| a.0 > 0)
            .map(|(b, a)| (point(b), axis.y(a.2))),
        RED.stroke_width(1),
    ))?
    .label("max")
    .legend(line_key(RED));
    c.draw_series(LineSeries::new(
        over_time
            .iter()
            .filter(|(_, a)| a.0 > 0)
            .map(|(b, a)| (point(b), axis.y(a.1 / a.0))),
        BLUE.stroke_width(2),
    ))?
    .label("mean")
    .legend(line_key(BLUE));
    legend(&mut c, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

/// rate.svg: messages received per second over the run, in all and per client (the busiest
/// dozen, when there are more).
pub fn rate_svg(reports: &[Option<ClientReport>], names: &[String], t0_ns: u64) -> String {
    let width = bucket_width(reports);
    let (width_ms, per_s) = (width as f64 / 1e6, 1e9 / width as f64);
    let total = buckets(
        reports,
        t0_ns,
        width,
        |r| r.rate.clone(),
        |a: &mut u64, n| *a += u64::from(n),
    );
    if total.is_empty() {
        return note_svg("No deliveries to plot.");
    }
    let mut per: Vec<(String, BTreeMap<u64, u64>, u64)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let r = r.as_ref()?;
            let one = std::slice::from_ref(reports.get(i)?);
            let m = buckets(
                one,
                t0_ns,
                width,
                |r| r.rate.clone(),
                |a: &mut u64, n| *a += u64::from(n),
            );
            let name = names.get(i).cloned().unwrap_or_else(|| format!("c{i}"));
            Some((name, m, r.received()))
        })
        .collect();
    let clients = per.len();
    per.sort_by_key(|p| std::cmp::Reverse(p.2));
    per.truncate(12);
    per.sort_by(|a, b| a.0.cmp(&b.0)); // the legend in name order
    let mut svg = String::new();
    let r = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (W, 440)).into_drawing_area();
        root.fill(&WHITE)?;
        let end_ms = total.keys().last().map_or(1, |b| b + 1) as f64 * width_ms;
        let peak = total.values().copied().max().unwrap_or(1) as f64 * per_s;
        let shown = if clients > per.len() {
            format!(", the {} busiest of {clients} clients", per.len())
        } else {
            String::new()
        };
        let mut c = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Messages received per second (per {}{shown})",
                    width_label(width)
                ),
                (FONT, 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..end_ms, 0f64..peak * 1.5)?;
        c.configure_mesh()
            .x_desc("time since the start barrier (ms)")
            .y_desc("messages / s")
            .y_label_formatter(&|y| si(*y))
            .draw()?;
        // Every bucket from start to end, zeros included, so a stall shows as a drop.
        let series = |m: &BTreeMap<u64, u64>| -> Vec<(f64, f64)> {
            let last = *total.keys().last().unwrap_or(&0);
            (0..=last)
                .map(|b| {
                    (
                        (b as f64 + 0.5) * width_ms,
                        *m.get(&b).unwrap_or(&0) as f64 * per_s,
                    )
                })
                .collect()
        };
        for (k, (name, m, _)) in per.iter().enumerate() {
            let color = Palette99::pick(k).mix(0.9);
            c.draw_series(LineSeries::new(series(m), color.stroke_width(1)))?
                .label(name.clone())
                .legend(line_key(color));
        }
        c.draw_series(LineSeries::new(series(&total), BLACK.stroke_width(3)))?
            .label("all clients")
            .legend(line_key(BLACK.stroke_width(3)));
        legend(&mut c, SeriesLabelPosition::UpperRight)?;
        root.present()?;
        Ok(())
    })()
    .map_err(|e| e.to_string());
    or_note(r, svg, "rate.svg")
}

/// A labelled arrow from `(x0, y0)` to `(x1, y1)` in the sequence diagram.
fn arrow(out: &mut String, (x0, y0): (u32, u32), (x1, y1): (u32, u32), color: &str, text: &str) {
    let _ = writeln!(
        out,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"{color}\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>\
<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\" text-anchor=\"middle\">{}</text>",
        (x0 + x1) / 2,
        (y0 + y1) / 2 - 4,
        escape(text)
    );
}

/// What a trace line means for the diagram.
enum Mark {
    /// A message leaves a client (sender lane, receiver, label).
    Send(usize, String, String),
    /// The relay routes a message (sender, receiver).
    Route(String, String),
    /// A message arrives (receiver lane, sender).
    Deliver(usize, String),
    /// A note on a lane (fork, registration, barrier, exit).
    Note(usize, String),
    /// The supervisor forks the process of a lane.
    Fork(usize, String),
}

/// Width of one lane of the sequence diagram, px.
const SEQ_LANE_W: u32 = 170;

/// sequence.svg: one vertical lane per process (the relay in the middle), time going down, an
/// arrow per message from its sender through the relay to its receiver, forks and exits marked
/// on the lanes. Rows follow the order of events (not their exact times, which crowd).
pub fn sequence_svg(t: &Timeline, max_messages: usize) -> Option<String> {
    let lanes = sequence_lanes(t)?;
    let (rows, sends) = sequence_rows(t, &lanes, max_messages);
    let (keep, link) = link_rows(&rows, &lanes);
    let lane = |role: &str| lanes.iter().position(|l| l == role);
    let mut row_of = vec![0u32; rows.len()];
    let mut shown = 0u32;
    for (i, k) in keep.iter().enumerate() {
        if *k {
            shown += 1;
            row_of[i] = shown;
        }
    }

    let lane_w = SEQ_LANE_W;
    let width = 90 + lane_w * lanes.len() as u32 + 150;
    let row_h = 26u32;
    let top = 70u32;
    let height = top + row_h * (shown + 2);
    let x = |k: usize| 90 + lane_w * k as u32 + lane_w / 2;
    let mut o = String::new();
    sequence_head(&mut o, &lanes, width, height);
    let y_of = |i: usize| top + row_h * row_of[i];
    let mut arrows = String::new();
    for (i, (t_us, mark)) in rows.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let y = y_of(i);
        let _ = writeln!(
            o,
            "<text x=\"8\" y=\"{}\" font-size=\"11\" fill=\"#666\">{:.3} ms</text>",
            y + 4,
            *t_us as f64 / 1000.0
        );
        match mark {
            Mark::Note(k, text) => {
                let _ = writeln!(
                    o,
                    "<circle cx=\"{}\" cy=\"{y}\" r=\"4\" fill=\"#555\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#333\">{}</text>",
                    x(*k),
                    x(*k) + 7,
                    y + 4,
                    escape(text)
                );
            }
            Mark::Fork(k, text) => {
                let _ = writeln!(
                    o,
                    "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#888\" stroke-dasharray=\"3 3\" marker-end=\"url(#arrow)\"/>\
<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#333\">{}</text>",
                    x(0),
                    x(*k),
                    x(*k) + 7,
                    y + 4,
                    escape(text)
                );
            }
            Mark::Send(..) => {}
            Mark::Route(from, to) => {
                let Some(s) = link[i] else { continue };
                let Mark::Send(_, _, label) = &rows[s].1 else {
                    continue;
                };
                if let (Some(a), Some(r)) = (lane(from), lane("relay")) {
                    let text = format!("SEND {to} {label}");
                    arrow(&mut arrows, (x(a), y_of(s)), (x(r), y), "#1f5fbf", &text);
                }
            }
            Mark::Deliver(k, from) => {
                let Some(r_row) = link[i] else { continue };
                if let Some(r) = lane("relay") {
                    let text = format!("DELIVER from {from}");
                    arrow(
                        &mut arrows,
                        (x(r), y_of(r_row)),
                        (x(*k), y),
                        "#1a8a3a",
                        &text,
                    );
                }
            }
        }
    }
    o.push_str(&arrows);
    if sends > max_messages {
        let _ = writeln!(
            o,
            "<text x=\"12\" y=\"{}\" font-size=\"13\">(the first {max_messages} of {sends} traced messages)</text>",
            height - 6
        );
    }
    o.push_str("</svg>\n");
    Some(o)
}

/// The diagram's frame: the title, and a labelled lane per process.
fn sequence_head(o: &mut String, lanes: &[String], width: u32, height: u32) {
    let lane_w = SEQ_LANE_W;
    let x = |k: usize| 90 + lane_w * k as u32 + lane_w / 2;
    let _ = writeln!(
        o,
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"{FONT}\">\n\
<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#222\"/></marker></defs>\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
<text x=\"12\" y=\"18\" font-size=\"15\">Each message goes from its sender through the relay to its receiver.</text>\
<text x=\"12\" y=\"32\" font-size=\"12\" fill=\"#555\">Time runs down; rows are in event order, with each event's time on the left.</text>"
    );
    for (k, name) in lanes.iter().enumerate() {
        let (fill, dash) = match name.as_str() {
            "relay" => ("#fde7c8", ""),
            "supervisor" => ("#eeeeee", " stroke-dasharray=\"4 4\""),
            _ => ("#dbe9fb", ""),
        };
        let _ = writeln!(
            o,
            "<rect x=\"{}\" y=\"36\" width=\"{}\" height=\"24\" rx=\"4\" fill=\"{fill}\" stroke=\"#555\"/>\
<text x=\"{}\" y=\"53\" font-size=\"14\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\
<line x1=\"{}\" y1=\"60\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"{dash}/>",
            x(k) - lane_w / 2 + 10,
            lane_w - 20,
            x(k),
            escape(name),
            x(k),
            x(k),
            height - 10
        );
    }
}

/// The sequence diagram's lanes: supervisor, the first half of the clients, the relay, the
/// rest (None without clients).
fn sequence_lanes(t: &Timeline) -> Option<Vec<String>> {
    let clients: Vec<&String> = t
        .lanes
        .iter()
        .filter(|r| *r != "supervisor" && *r != "relay")
        .collect();
    if clients.is_empty() {
        return None;
    }
    let half = clients.len().div_ceil(2);
    let mut lanes: Vec<String> = vec!["supervisor".into()];
    lanes.extend(clients[..half].iter().map(|s| s.to_string()));
    lanes.push("relay".into());
    lanes.extend(clients[half..].iter().map(|s| s.to_string()));
    Some(lanes)
}

/// The traced events the diagram draws, as marks on lanes, in event order; and how many
/// messages were traced (only the first `max_messages` are drawn).
fn sequence_rows(t: &Timeline, lanes: &[String], max_messages: usize) -> (Vec<(u64, Mark)>, usize) {
    let lane = |role: &str| lanes.iter().position(|l| l == role);
    let mut rows: Vec<(u64, Mark)> = Vec::new();
    let mut sends = 0usize;
    for l in &t.lines {
        let Some(me) = lane(&l.role) else { continue };
        let w = l.what.as_str();
        let mark = if let Some(rest) = w.strip_prefix("SEND to ") {
            let (to, label) = rest.split_once(' ').unwrap_or((rest, ""));
            let label = label.trim_end_matches(": into its write buffer");
            sends += 1;
            if sends > max_messages {
                continue;
            }
            Mark::Send(me, to.to_string(), label.to_string())
        } else if let Some(rest) = w.strip_prefix("SEND from ") {
            let (from, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let to = rest
                .split_once("-> DELIVER to ")
                .map(|(_, t)| t.split(' ').next().unwrap_or(""))
                .unwrap_or("");
            Mark::Route(from.to_string(), to.to_string())
        } else if let Some(rest) = w.strip_prefix("DELIVER from ") {
            let from = rest.split(' ').next().unwrap_or("");
            Mark::Deliver(me, from.to_string())
        } else if let Some(rest) = w.strip_prefix("fork() -> ") {
            let (role, pid) = rest.split_once(" is pid ").unwrap_or((rest, "?"));
            match lane(role) {
                Some(k) => Mark::Fork(k, format!("fork(): pid {pid}")),
                None => continue,
            }
        } else if let Some(rest) = w.strip_prefix("waitpid(): ") {
            let (role, st) = rest.split_once(' ').unwrap_or((rest, ""));
            match lane(role) {
                Some(k) => Mark::Note(k, st.to_string()),
                None => continue,
            }
        } else if w.starts_with("socket() + connect(") {
            Mark::Note(me, "connect, HELLO / WELCOME".into())
        } else if w.starts_with("closed barrier 0") {
            Mark::Note(me, "barrier released".into())
        } else if w.starts_with("register: ") {
            let name = w.rsplit(" is ").next().unwrap_or("");
            Mark::Note(me, format!("{name} registered"))
        } else {
            continue;
        };
        rows.push((l.t_us, mark));
    }
    (rows, sends)
}

/// Matches each message's three rows (sent, routed, delivered) in FIFO order per (sender,
/// receiver), and keeps only what is drawn: a send the relay's trace never routed (its events
/// were cut) would leave an empty row. Returns which rows to keep, and each routed or
/// delivered row's earlier row.
fn link_rows(rows: &[(u64, Mark)], lanes: &[String]) -> (Vec<bool>, Vec<Option<usize>>) {
    let mut keep = vec![true; rows.len()];
    let mut link: Vec<Option<usize>> = vec![None; rows.len()];
    {
        let mut sent: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        let mut routed: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (i, (_, m)) in rows.iter().enumerate() {
            match m {
                Mark::Send(k, to, _) => {
                    keep[i] = false;
                    sent.entry((lanes[*k].clone(), to.clone()))
                        .or_default()
                        .push(i);
                }
                Mark::Route(from, to) => {
                    let key = (from.clone(), to.clone());
                    match sent.get_mut(&key).filter(|v| !v.is_empty()) {
                        Some(v) => {
                            let s = v.remove(0);
                            keep[s] = true;
                            link[i] = Some(s);
                            routed.entry(key).or_default().push(i);
                        }
                        None => keep[i] = false,
                    }
                }
                Mark::Deliver(k, from) => {
                    let key = (from.clone(), lanes[*k].clone());
                    match routed.get_mut(&key).filter(|v| !v.is_empty()) {
                        Some(v) => link[i] = Some(v.remove(0)),
                        None => keep[i] = false,
                    }
                }
                Mark::Note(..) | Mark::Fork(..) => {}
            }
        }
    }
    (keep, link)
}
