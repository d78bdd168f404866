//! index.html of a results folder.

use std::fmt::Write as _;

use crate::exit;

use super::*;

/// index.html of a results folder: the configuration, seed and verdict, every check, and the
/// pictures (given as file name, title and picture: one not drawn is named with its reason)
/// on one page.
pub fn html(
    r: &Report,
    pictures: &[(&str, &str, crate::plots::Picture)],
    has_trace: bool,
) -> String {
    use crate::plots::escape;
    let mut o = String::new();
    let verdict_color = if r.exit_code == exit::OK {
        "#1a7f37"
    } else {
        "#cf222e"
    };
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>relay-sim: {} ({})</title>\
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse}}td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}}\
.verdict{{font-size:1.4em;font-weight:bold;color:{verdict_color}}}img{{max-width:100%;border:1px solid #ddd;margin:.5em 0}}\
.missing{{color:#555;font-style:italic}}pre{{background:#f6f8fa;padding:1em;overflow-x:auto;font-size:.85em}}</style></head><body>\n",
        r.verdict,
        escape(&r.replay)
    );
    let _ = writeln!(o, "<h1>relay-sim results</h1>");
    let _ = writeln!(
        o,
        "<p class=\"verdict\">{}{}</p>",
        r.verdict.name().to_uppercase(),
        r.failure
            .as_ref()
            .map_or(String::new(), |f| format!(": {}", escape(f)))
    );
    configuration(&mut o, r);
    checks(&mut o, r);
    if let Some(t) = &r.throughput {
        let _ = writeln!(
            o,
            "<p>Throughput: {} messages/s, {:.1} MB/s over the exchange ({:.1} ms).</p>",
            group(t.msgs_per_s as u64),
            t.mb_per_s,
            t.exchange_s * 1000.0
        );
    }
    if let Some(l) = &r.latency_us {
        let _ = writeln!(
            o,
            "<p>Latency (send to delivery): p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs.</p>",
            l.p50, l.p99, l.p999, l.max
        );
    }
    for (file, title, picture) in pictures {
        let _ = match picture {
            crate::plots::Picture::Svg(_) => writeln!(
                o,
                "<h2>{}</h2><a href=\"{file}\"><img src=\"{file}\" alt=\"{}\"></a>",
                escape(title),
                escape(title)
            ),
            crate::plots::Picture::NotDrawn(why) => writeln!(
                o,
                "<h2>{}</h2><p class=\"missing\">{file} is not drawn for this run: {}.</p>",
                escape(title),
                escape(why)
            ),
        };
    }
    let _ = writeln!(
        o,
        "<h2>Files</h2><ul><li><a href=\"report.json\">report.json</a> (schema {})</li>\
<li><a href=\"report.txt\">report.txt</a></li><li><a href=\"junit.xml\">junit.xml</a></li>{}</ul>",
        r.schema_version,
        if has_trace {
            "<li><a href=\"trace.txt\">trace.txt</a>: every process's events, merged</li>"
        } else {
            ""
        }
    );
    let _ = writeln!(o, "<h2>Report</h2><pre>{}</pre>", escape(&human(r)));
    o.push_str("</body></html>\n");
    o
}

/// The run's settings, one row each.
fn configuration(o: &mut String, r: &Report) {
    use crate::plots::escape;
    let c = &r.config;
    let _ = writeln!(o, "<h2>Configuration</h2><table>");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(o, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    };
    row("clients", c.clients.to_string());
    row(
        "messages",
        format!("{} ({} per client)", c.total_msgs, c.msgs_per_client),
    );
    row("payload", format!("{} bytes", c.payload));
    row("pattern", c.pattern.clone());
    row("transport", c.transport.clone());
    row("backend", c.backend.clone());
    row("relay busy-poll", c.relay_spin.clone());
    if let Some(b) = c.relay_max_buffer {
        row("relay output bound", format!("{b} bytes per receiver"));
    }
    row("seed", c.seed.to_string());
    if let Some(s) = &c.scenario {
        row("scenario", s.clone());
    }
    if let Some(n) = &c.nemesis {
        row("nemesis", n.clone());
    }
    if let Some(i) = &c.inject {
        row("injected fault", format!("{i} (on purpose)"));
    }
    row("ending", r.ending.to_string());
    row("replay", r.replay.clone());
    let _ = writeln!(o, "</table>");
}

/// Every check, its result and its count.
fn checks(o: &mut String, r: &Report) {
    let _ = writeln!(
        o,
        "<h2>Checks</h2><table><tr><th>check</th><th>result</th><th>violations</th></tr>"
    );
    for ch in &r.checks {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ch.name,
            match (&ch.note, ch.status) {
                (_, CheckStatus::Failed) => "FAILED".to_string(),
                (Some(n), CheckStatus::NotCheckable) =>
                    format!("not checkable: {}", crate::plots::escape(n)),
                (Some(n), CheckStatus::NotFinished) =>
                    format!("not finished: {}", crate::plots::escape(n)),
                (Some(n), CheckStatus::PartlyCheckable) =>
                    format!("ok in part: {}", crate::plots::escape(n)),
                _ => "ok".to_string(),
            },
            ch.violations
        );
    }
    let _ = writeln!(o, "</table>");
}
