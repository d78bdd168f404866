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

/// A count with thousands separators: 1,234,567.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A count for an axis label: 950, 1.5k, 12k, 3.4M, 12M (no ".0": 2k, not 2.0k).
pub fn si(v: f64) -> String {
    let (x, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if x < 10.0 && !unit.is_empty() { 1 } else { 0 };
    format!("{}{unit}", trim(format!("{x:.digits$}")))
}

/// A number for an axis tick, without a trailing ".0": 20, 2.5.
pub fn tick(v: f64) -> String {
    trim(format!("{v:.2}"))
}

/// "20.00" to "20", "2.50" to "2.5".
fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A duration in the unit a person reads it in, three significant digits: 850 µs, 13.6 ms.
pub fn duration(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    let (x, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "µs")
    };
    let digits = if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$} {unit}")
}

/// The size of axis labels and of axis titles (plotters draws text at 0.8 of the size given:
/// these come out at 13 and 14 px; its default, under 10 px, is hard to read).
const TICK_PX: u32 = 16;
const AXIS_PX: u32 = 17;

/// Colours for per-client lines: saturated, each distinct on white (no pale yellow or cyan).
const LINE_COLORS: [RGBColor; 12] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x37, 0xa2),
    RGBColor(0x55, 0x55, 0x55),
    RGBColor(0x0b, 0x7a, 0x75),
    RGBColor(0xb8, 0x86, 0x0b),
    RGBColor(0x00, 0x00, 0x80),
    RGBColor(0x7f, 0x00, 0x00),
];

/// A picture of the results folder, or why it is left out.
#[derive(Debug)]
pub enum Picture {
    /// The SVG to write.
    Svg(String),
    /// Not drawn, and why (index.html says so in its place).
    NotDrawn(String),
}

/// The fewest time buckets a line over the run is drawn from: one or two are a dot, not a line.
const MIN_BUCKETS: u64 = 3;

/// The legend every chart here draws: a box at `at`, on translucent white, with a black border.
pub fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    c: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    c.configure_series_labels()
        .position(at)
        .label_font((FONT, TICK_PX))
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

/// A chart drawn, or the error that stopped it as the reason it is missing.
fn drawn(r: Result<(), String>, svg: String) -> Picture {
    match r {
        Ok(()) => Picture::Svg(svg),
        Err(e) => Picture::NotDrawn(format!("it could not be drawn ({e})")),
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
) -> Picture {
    let Some(h) = hist.filter(|h| !h.is_empty()) else {
        return Picture::NotDrawn(
            "no latency was measured: a payload under 32 bytes (a script's short text, or a \
             --payload under 32) has no room for its send time"
                .into(),
        );
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
    let span = over_time.keys().last().map_or(0, |b| b + 1);
    let axis = LogUs::of(h);
    let mut svg = String::new();
    let r = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let tall = if span >= MIN_BUCKETS { 760 } else { 420 };
        let root = SVGBackend::with_string(&mut svg, (W, tall)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(380);
        latency_by_percentile(&top, h, what, &axis)?;
        if span >= MIN_BUCKETS {
            latency_over_time(&bottom, &over_time, width, &axis)?;
        } else {
            bottom.draw_text(
                &format!(
                    "Latency over the run is not drawn: every message arrived within {} \
                     (a line needs {MIN_BUCKETS} buckets of {}).",
                    width_label(span.max(1) * width),
                    width_label(width)
                ),
                &(FONT, AXIS_PX).into_text_style(&bottom),
                (20, 10),
            )?;
        }
        root.present()?;
        Ok(())
    })()
    .map_err(|e| e.to_string());
    drawn(r, svg)
}

/// A drawing area of an SVG being made.
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// A chart of this folder's pictures on `area`: its caption, margins and room for the axis
/// labels, alike in every panel.
fn chart<'a, 'b>(area: &'a Area<'b>, caption: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut c = ChartBuilder::on(area);
    c.caption(caption, (FONT, 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(80);
    c
}

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
    let caption = format!(
        "Latency by percentile ({what}, {} messages)",
        group(h.len())
    );
    let mut c = chart(area, &caption).build_cartesian_2d(0f64..nines, lo..hi)?;
    c.configure_mesh()
        .label_style((FONT, TICK_PX))
        .axis_desc_style((FONT, AXIS_PX))
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
                format!("{label} {}", duration(v)),
                (x + 0.03, y - (hi - lo) * 0.02),
                (FONT, 17).into_font(),
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
    let caption = format!("Latency over the run (per {})", width_label(width));
    let mut c = chart(area, &caption).build_cartesian_2d(0f64..end_ms, axis.lo..axis.hi)?;
    c.configure_mesh()
        .label_style((FONT, TICK_PX))
        .axis_desc_style((FONT, AXIS_PX))
        .x_desc("time since the start barrier (ms)")
        .y_desc("latency (log scale)")
        .y_labels(axis.decades)
        .y_label_formatter(&LogUs::label)
        .x_label_formatter(&|x| tick(*x))
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

/// One line of a rate panel: its name, its points and its colour and width.
type RateLine = (String, Vec<(f64, f64)>, RGBColor, u32);

/// rate.svg: messages received per second over the run: all clients in one panel, and each
/// client (the busiest dozen, when there are more) on its own scale in a second.
pub fn rate_svg(
    reports: &[Option<ClientReport>],
    names: &[String],
    t0_ns: u64,
    faults: &[crate::supervisor::NemesisEvent],
) -> Picture {
    let width = bucket_width(reports);
    let (width_ms, per_s) = (width as f64 / 1e6, 1e9 / width as f64);
    let sum = |of: &[Option<ClientReport>]| {
        buckets(
            of,
            t0_ns,
            width,
            |r| r.rate.clone(),
            |a: &mut u64, n| *a += u64::from(n),
        )
    };
    let total = sum(reports);
    let span = total.keys().last().map_or(0, |b| b + 1);
    let delivered: u64 = total.values().sum();
    if delivered == 0 {
        return Picture::NotDrawn("no message was delivered".into());
    }
    if span < MIN_BUCKETS {
        return Picture::NotDrawn(format!(
            "all {} deliveries came within {} of the start: a rate over time needs \
             {MIN_BUCKETS} buckets of {} or more (with --trace, sequence.svg and trace.txt \
             show when each message moved)",
            group(delivered),
            width_label(span * width),
            width_label(width)
        ));
    }
    // Every bucket from start to end, zeros included, so a stall shows as a drop.
    let series = |m: &BTreeMap<u64, u64>| -> Vec<(f64, f64)> {
        (0..span)
            .map(|b| {
                (
                    (b as f64 + 0.5) * width_ms,
                    *m.get(&b).unwrap_or(&0) as f64 * per_s,
                )
            })
            .collect()
    };
    // Each client's line, and what it received (to pick the busiest).
    let mut per: Vec<(RateLine, u64)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let received = r.as_ref()?.received();
            let m = sum(std::slice::from_ref(reports.get(i)?));
            let name = names.get(i).cloned().unwrap_or_else(|| format!("c{i}"));
            Some(((name, series(&m), BLACK, 2), received))
        })
        .collect();
    let clients = per.len();
    per.sort_by_key(|p| std::cmp::Reverse(p.1));
    per.truncate(LINE_COLORS.len());
    per.sort_by(|a, b| a.0 .0.cmp(&b.0 .0)); // the key in name order
    let shown = if clients > per.len() {
        format!("the {} busiest of {clients} clients", per.len())
    } else {
        "each client".to_string()
    };
    let lines: Vec<RateLine> = per
        .into_iter()
        .zip(LINE_COLORS)
        .map(|(((name, pts, _, w), _), color)| (name, pts, color, w))
        .collect();
    let end_ms = span as f64 * width_ms;
    // Partitions, shaded from the cut to the heal (what TCP did after shows in the lines).
    let cuts: Vec<Cut> = faults
        .iter()
        .filter(|e| e.action.is_partition())
        .map(|e| {
            let who = if e.role == "relay" {
                "relay's host".to_string()
            } else {
                e.role.clone()
            };
            (
                e.at_ms as f64,
                (e.at_ms + e.for_ms) as f64,
                format!("{who} cut off"),
            )
        })
        .collect();
    let mut svg = String::new();
    let r = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (W, 760)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(380);
        let all = [("all clients".to_string(), series(&total), BLACK, 3)];
        let caption = format!(
            "Messages received per second, all clients (per {})",
            width_label(width)
        );
        rate_panel(&top, &caption, end_ms, &all, &cuts)?;
        rate_panel(
            &bottom,
            &format!("The same, {shown}"),
            end_ms,
            &lines,
            &cuts,
        )?;
        root.present()?;
        Ok(())
    })()
    .map_err(|e| e.to_string());
    drawn(r, svg)
}

/// One panel of rate.svg: its lines on a scale from zero to a little over their peak.
fn rate_panel(
    area: &Area<'_>,
    caption: &str,
    end_ms: f64,
    lines: &[RateLine],
    cuts: &[Cut],
) -> Result<(), Box<dyn std::error::Error>> {
    let peak = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let (area, key) = area.split_horizontally(W - 110);
    let mut c = chart(&area, caption).build_cartesian_2d(0f64..end_ms, 0f64..peak * 1.25)?;
    c.configure_mesh()
        .label_style((FONT, TICK_PX))
        .axis_desc_style((FONT, AXIS_PX))
        .x_desc("time since the start barrier (ms)")
        .y_desc("messages / s")
        .y_label_formatter(&|y| si(*y))
        .x_label_formatter(&|x| tick(*x))
        .draw()?;
    let top = peak * 1.25;
    for (k, (from, to, what)) in cuts.iter().enumerate() {
        c.draw_series(std::iter::once(Rectangle::new(
            [(*from, 0.0), (to.min(end_ms), top)],
            CUT.mix(0.18).filled(),
        )))?;
        // Labels step down, so cuts close together do not write over each other.
        let y = top * (0.97 - 0.06 * (k % 3) as f64);
        c.draw_series(std::iter::once(Text::new(
            what.clone(),
            (*from, y),
            (FONT, TICK_PX).into_font().color(&CUT),
        )))?;
    }
    for (_, pts, color, w) in lines {
        c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(*w)))?;
    }
    // The key, beside the plot rather than over its lines.
    for (k, (name, _, color, w)) in lines.iter().enumerate() {
        let y = 50 + 20 * k as i32;
        key.draw(&PathElement::new(
            vec![(4, y), (28, y)],
            color.stroke_width(*w),
        ))?;
        key.draw(&Text::new(
            name.clone(),
            (34, y - 8),
            (FONT, TICK_PX).into_font(),
        ))?;
    }
    if !cuts.is_empty() {
        let y = 50 + 20 * lines.len() as i32;
        key.draw(&Rectangle::new(
            [(4, y - 6), (28, y + 6)],
            CUT.mix(0.18).filled(),
        ))?;
        key.draw(&Text::new(
            "partition",
            (34, y - 8),
            (FONT, TICK_PX).into_font(),
        ))?;
    }
    Ok(())
}

/// A partition on rate.svg: from, to (ms after the start barrier), and what was cut off.
type Cut = (f64, f64, String);

/// The colour of a partition.
const CUT: RGBColor = RGBColor(200, 40, 40);

/// An arrow from `(x0, y0)` to `(x1, y1)` in the sequence diagram; `dash` for the handshake.
fn arrow(out: &mut String, (x0, y0): (u32, u32), (x1, y1): (u32, u32), color: &str, dash: bool) {
    let _ = writeln!(
        out,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"{color}\" stroke-width=\"1.5\"{} marker-end=\"url(#head{})\"/>",
        if dash { " stroke-dasharray=\"3 3\"" } else { "" },
        &color[1..]
    );
}

/// A label in the sequence diagram, on a white halo so that a line under it does not hide it.
fn label(out: &mut String, (x, anchor): (u32, &str), y: u32, color: &str, text: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{x}\" y=\"{}\" font-size=\"12\" fill=\"{color}\" text-anchor=\"{anchor}\" \
paint-order=\"stroke\" stroke=\"white\" stroke-width=\"4\" stroke-linejoin=\"round\">{}</text>",
        y + 4,
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
    /// The relay registers a client's name (relay lane, name): its HELLO arrived.
    Register(usize, String),
    /// A client has its WELCOME (its lane): it is connected and registered.
    Welcome(usize),
    /// A note on a lane (barrier, exit).
    Note(usize, String),
    /// The supervisor forks the process of a lane.
    Fork(usize, String),
    /// A partition begins (true) or heals (false): the host.
    Cut(bool, String),
}

/// The colours of the diagram's arrows (each has its own arrowhead): SEND, DELIVER, the
/// handshake, fork().
const ARROW_COLORS: [&str; 4] = [SEND_COLOR, DELIVER_COLOR, "#777", "#888"];
const SEND_COLOR: &str = "#1f5fbf";
const DELIVER_COLOR: &str = "#1a8a3a";

/// Width of one lane of the sequence diagram, px.
const SEQ_LANE_W: u32 = 170;
/// Room left of the first lane (for the times) and right of the last (for its labels), px.
const SEQ_LEFT: u32 = 90;
const SEQ_RIGHT: u32 = 230;

/// The most messages sequence.svg draws: past a dozen, concurrent arrows cross into a tangle,
/// so the diagram shows the run's beginning and says so (trace.txt has every event).
pub const SEQ_MAX_MESSAGES: usize = 12;

/// sequence.svg: one vertical lane per process (the relay in the middle), time going down, an
/// arrow per message from its sender to the relay and from the relay to its receiver, forks,
/// handshakes and exits marked on the lanes. Rows follow the order of events (not their exact
/// times, which crowd); each label sits beside its own lane, on the side away from the relay,
/// so it is clear of the arrows it names.
pub fn sequence_svg(t: &Timeline, max_messages: usize) -> Option<String> {
    let lanes = sequence_lanes(t)?;
    let (rows, sends) = sequence_rows(t, &lanes, max_messages);
    let (keep, link) = link_rows(&rows, &lanes);
    let relay = lanes.iter().position(|l| l == "relay")?;
    let mut row_of = vec![0u32; rows.len()];
    let mut shown = 0u32;
    for (i, k) in keep.iter().enumerate() {
        if *k {
            shown += 1;
            row_of[i] = shown;
        }
    }
    let windowed = sends > max_messages;
    let top = if windowed { 100 } else { 86 };
    let row_h = 26u32;
    let width = SEQ_LEFT + SEQ_LANE_W * lanes.len() as u32 + SEQ_RIGHT;
    let height = top + row_h * (shown + 2);
    let x = |k: usize| SEQ_LEFT + SEQ_LANE_W * k as u32 + SEQ_LANE_W / 2;
    // Beside lane k, on the side away from the relay (the relay's own: right).
    let beside = |k: usize| {
        if k < relay && k > 0 {
            (x(k) - 8, "end")
        } else {
            (x(k) + 8, "start")
        }
    };
    let y_of = |i: usize| top + row_h * row_of[i];
    let mut o = String::new();
    sequence_head(&mut o, &lanes, width, height, top - 36);
    if windowed {
        let _ = writeln!(
            o,
            "<text x=\"12\" y=\"46\" font-size=\"12\" fill=\"#b35900\">Showing the first {max_messages} of {sends} traced messages: more arrows cross into a tangle. trace.txt has every event.</text>"
        );
    }
    let (mut lines, mut labels) = (String::new(), String::new());
    for (i, (t_us, mark)) in rows.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let y = y_of(i);
        let _ = writeln!(
            labels,
            "<text x=\"8\" y=\"{}\" font-size=\"11\" fill=\"#666\">{:.3} ms</text>",
            y + 4,
            *t_us as f64 / 1000.0
        );
        let dot = |lines: &mut String, k: usize, fill: &str| {
            let _ = writeln!(
                lines,
                "<circle cx=\"{}\" cy=\"{y}\" r=\"3.5\" fill=\"{fill}\"/>",
                x(k)
            );
        };
        match mark {
            Mark::Note(k, text) => {
                dot(&mut lines, *k, "#555");
                label(&mut labels, beside(*k), y, "#333", text);
            }
            Mark::Cut(cut, who) => {
                // Across every lane: from here on (until the heal) nothing crosses the cut.
                let (color, text) = if *cut {
                    ("#c82828", format!("partition: {who} cut off the switch"))
                } else {
                    ("#1a8a3a", format!("healed: {who} back on the switch"))
                };
                let _ = writeln!(
                    lines,
                    "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"8 4\"/>",
                    x(0),
                    x(lanes.len() - 1)
                );
                label(
                    &mut labels,
                    (x(lanes.len() - 1) + 8, "start"),
                    y,
                    color,
                    &text,
                );
            }
            Mark::Register(k, name) => {
                dot(&mut lines, *k, "#555");
                let text = format!("HELLO {name}: registered");
                label(&mut labels, (x(*k) + 8, "start"), y, "#333", &text);
            }
            Mark::Welcome(k) => {
                if let Some(r) = link[i] {
                    arrow(&mut lines, (x(relay), y_of(r)), (x(*k), y), "#777", true);
                }
                label(&mut labels, beside(*k), y, "#333", "WELCOME: connected");
            }
            Mark::Fork(k, text) => {
                arrow(&mut lines, (x(0), y), (x(*k), y), "#888", true);
                label(&mut labels, (x(*k) + 8, "start"), y, "#333", text);
            }
            Mark::Send(k, to, text) => {
                dot(&mut lines, *k, SEND_COLOR);
                let text = format!("SEND {to} {text}");
                label(&mut labels, beside(*k), y, SEND_COLOR, &text);
            }
            Mark::Route(..) => {
                let Some(s) = link[i] else { continue };
                let Mark::Send(a, ..) = &rows[s].1 else {
                    continue;
                };
                arrow(
                    &mut lines,
                    (x(*a), y_of(s)),
                    (x(relay), y),
                    SEND_COLOR,
                    false,
                );
            }
            Mark::Deliver(k, from) => {
                let Some(r_row) = link[i] else { continue };
                arrow(
                    &mut lines,
                    (x(relay), y_of(r_row)),
                    (x(*k), y),
                    DELIVER_COLOR,
                    false,
                );
                let text = format!("DELIVER from {from}");
                label(&mut labels, beside(*k), y, DELIVER_COLOR, &text);
            }
        }
    }
    o.push_str(&lines);
    o.push_str(&labels);
    o.push_str("</svg>\n");
    Some(o)
}

/// The diagram's frame: the title, and a labelled lane per process, its box at `box_y`.
fn sequence_head(o: &mut String, lanes: &[String], width: u32, height: u32, box_y: u32) {
    let lane_w = SEQ_LANE_W;
    let x = |k: usize| SEQ_LEFT + lane_w * k as u32 + lane_w / 2;
    let _ = writeln!(
        o,
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"{FONT}\">\n\
<defs>{}</defs>\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
<text x=\"12\" y=\"18\" font-size=\"15\">Each message goes from its sender (blue, SEND) to the relay, and from the relay to its receiver (green, DELIVER).</text>\
<text x=\"12\" y=\"32\" font-size=\"12\" fill=\"#555\">Time runs down; rows are in event order, with each event's time on the left. Dashed: fork() and the HELLO / WELCOME handshake.</text>",
        ARROW_COLORS
            .iter()
            .map(|c| format!(
                "<marker id=\"head{}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"{c}\"/></marker>",
                &c[1..]
            ))
            .collect::<String>()
    );
    for (k, name) in lanes.iter().enumerate() {
        let (fill, dash) = match name.as_str() {
            "relay" => ("#fde7c8", ""),
            "supervisor" => ("#eeeeee", " stroke-dasharray=\"4 4\""),
            _ => ("#dbe9fb", ""),
        };
        let _ = writeln!(
            o,
            "<rect x=\"{}\" y=\"{box_y}\" width=\"{}\" height=\"24\" rx=\"4\" fill=\"{fill}\" stroke=\"#555\"/>\
<text x=\"{}\" y=\"{}\" font-size=\"14\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\
<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"{dash}/>",
            x(k) - lane_w / 2 + 10,
            lane_w - 20,
            x(k),
            box_y + 17,
            escape(name),
            x(k),
            box_y + 24,
            x(k),
            height - 10
        );
    }
}

/// The sequence diagram's lanes: the supervisor, the first half of the clients (rounded
/// down), the relay, the rest: the relay is the middle lane (None without clients).
fn sequence_lanes(t: &Timeline) -> Option<Vec<String>> {
    let clients: Vec<&String> = t
        .lanes
        .iter()
        .filter(|r| *r != "supervisor" && *r != "relay")
        .collect();
    if clients.is_empty() {
        return None;
    }
    let half = clients.len() / 2;
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
            Mark::Welcome(me)
        } else if let Some(rest) = w
            .strip_prefix("nemesis: partition: ")
            .or_else(|| w.strip_prefix("nemesis: heal: "))
        {
            // "host1 cut off the switch (...": "the relay's host back on the switch (..."
            let who = rest
                .split_once(" cut off")
                .or_else(|| rest.split_once(" back on"))
                .map_or("a host", |(who, _)| who);
            Mark::Cut(w.starts_with("nemesis: partition"), who.to_string())
        } else if w.starts_with("closed barrier 0") {
            Mark::Note(me, "barrier released".into())
        } else if w.starts_with("register: ") {
            let name = w.rsplit(" is ").next().unwrap_or("");
            Mark::Register(me, name.to_string())
        } else {
            continue;
        };
        rows.push((l.t_us, mark));
    }
    (rows, sends)
}

/// Matches each message's three rows (sent, routed, delivered) in FIFO order per (sender,
/// receiver), and each WELCOME with its registration; keeps only what is drawn: a send the
/// relay's trace never routed (its events were cut) would leave an empty row. Returns which
/// rows to keep, and each routed, delivered or welcomed row's earlier row.
fn link_rows(rows: &[(u64, Mark)], lanes: &[String]) -> (Vec<bool>, Vec<Option<usize>>) {
    let mut keep = vec![true; rows.len()];
    let mut link: Vec<Option<usize>> = vec![None; rows.len()];
    let mut sent: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    let mut routed: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    let mut registered: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (_, m)) in rows.iter().enumerate() {
        match m {
            Mark::Send(k, to, _) => {
                keep[i] = false;
                sent.entry((&lanes[*k], to)).or_default().push(i);
            }
            Mark::Route(from, to) => {
                let key = (from.as_str(), to.as_str());
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
                let key = (from.as_str(), lanes[*k].as_str());
                match routed.get_mut(&key).filter(|v| !v.is_empty()) {
                    Some(v) => link[i] = Some(v.remove(0)),
                    None => keep[i] = false,
                }
            }
            Mark::Register(_, name) => {
                registered.insert(name, i);
            }
            Mark::Welcome(k) => link[i] = registered.get(lanes[*k].as_str()).copied(),
            Mark::Note(..) | Mark::Fork(..) | Mark::Cut(..) => {}
        }
    }
    (keep, link)
}
