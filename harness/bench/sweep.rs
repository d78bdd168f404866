//! relay-sim-sweep: runs relay-sim over a range of client counts (per backend), payload sizes
//! and ping-pong pairs, and writes a table (sweep.md, sweep.csv) and SVG plots (clients.svg,
//! payload.svg, pingpong.svg, idle.svg). docs/performance.md shows its output.
//!
//! The idle sweep shows what select() costs by itself: one pair plays ping-pong through
//! `relay-sim relay` while N other connections sit registered and silent. Every select() hands
//! the kernel all N+2 fds and then scans them all; poll() too; epoll_wait() returns only the
//! ready ones. (In the process sweeps, the time goes to the processes themselves.)
//!
//!     cargo build --release
//!     cargo run --release -p relay-harness --bin relay-sim-sweep -- [OUT_DIR] [--quick]
//!
//! Each point is the median of REPS runs (env REPS, default 3) of `relay-sim --json`; every run
//! must verify clean. `--quick` runs fewer points (for a smoke test).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use plotters::prelude::*;
use relay_harness::plots::{legend, line_key, or_note, si};
use serde_json::Value;

struct Point {
    sweep: &'static str,
    series: String,
    x: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    relay_kib: f64,
    /// Forking the processes and registering every client, and the exchange, ms.
    fork_ms: f64,
    exchange_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs relay-sim `reps` times with `args`; the medians, or why it could not.
fn measure(bin: &Path, args: &[String], reps: usize) -> Result<[f64; 7], String> {
    let mut cols: [Vec<f64>; 7] = Default::default();
    for rep in 0..reps {
        let out = Command::new(bin)
            .args(args)
            .args(["--seed", &(rep + 1).to_string(), "--json"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let r: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{args:?}: no JSON report ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        if r["verdict"] != "pass" {
            return Err(format!("{args:?}: {}", r["failure"]));
        }
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        cols[0].push(f(&r["throughput"]["msgs_per_s"]));
        cols[1].push(f(&r["throughput"]["mb_per_s"]));
        cols[2].push(f(&r["latency_us"]["p50"]));
        cols[3].push(f(&r["latency_us"]["p99"]));
        cols[4].push(f(&r["memory"]["relay_kib"]));
        cols[5].push(f(&r["phases"]["fork_register_ms"]));
        cols[6].push(f(&r["phases"]["exchange_ms"]));
    }
    Ok(cols.map(median))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn main() {
    let mut out = PathBuf::from("/tmp/relay-sim-sweep");
    let mut quick = false;
    for a in std::env::args().skip(1) {
        if a == "--quick" {
            quick = true;
        } else {
            out = PathBuf::from(a);
        }
    }
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = std::env::var("RELAY_SIM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/release/relay-sim"));
    if !bin.is_file() {
        eprintln!(
            "relay-sim-sweep: {} not found; run `cargo build --release` first (or set RELAY_SIM)",
            bin.display()
        );
        std::process::exit(2);
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("relay-sim-sweep: cannot create {}: {e}", out.display());
        std::process::exit(2);
    }
    let mut points: Vec<Point> = Vec::new();
    let mut push = |sweep, series: String, x: f64, m: [f64; 7]| {
        eprintln!(
            "  {sweep} {series} {x}: {:.0} msg/s, {:.1} MB/s, p50 {:.1} us, p99 {:.1} us",
            m[0], m[1], m[2], m[3]
        );
        points.push(Point {
            sweep,
            series,
            x,
            msgs_per_s: m[0],
            mb_per_s: m[1],
            p50_us: m[2],
            p99_us: m[3],
            relay_kib: m[4],
            fork_ms: m[5],
            exchange_ms: m[6],
        });
    };
    let mut failed = Vec::new();

    // Throughput against clients, per backend: about 200,000 messages in all, 64 bytes.
    let clients: &[usize] = if quick {
        &[2, 8]
    } else {
        &[2, 8, 64, 256, 1000, 4000, 10_000]
    };
    let _ = raise_nofile();
    for backend in ["select", "poll", "epoll"] {
        for &n in clients {
            if backend == "select" && n > 1000 {
                continue; // past FD_SETSIZE: relay-sim refuses, and says to use poll or epoll
            }
            let msgs = (200_000 / n).clamp(50, 25_000);
            let a = args(&[
                "--clients",
                &n.to_string(),
                "--msgs",
                &msgs.to_string(),
                "--payload",
                "64",
                "--backend",
                backend,
            ]);
            match measure(&bin, &a, reps) {
                Ok(m) => push("clients", backend.to_string(), n as f64, m),
                Err(e) => failed.push(e),
            }
        }
    }
    // C10K: the same 20 messages per client from 500 to 10,000 clients, per backend: the set-up
    // and the exchange per client should stay flat (every phase linear in the clients).
    let c10k: &[usize] = if quick {
        &[100, 400]
    } else {
        &[500, 1000, 2000, 4000, 7000, 10_000]
    };
    for backend in ["select", "poll", "epoll"] {
        for &n in c10k {
            if backend == "select" && n > 1000 {
                continue;
            }
            let a = args(&[
                "--clients",
                &n.to_string(),
                "--msgs",
                "20",
                "--payload",
                "64",
                "--backend",
                backend,
            ]);
            match measure(&bin, &a, reps) {
                Ok(m) => push("c10k", backend.to_string(), n as f64, m),
                Err(e) => failed.push(e),
            }
        }
    }
    // Throughput and MB/s against payload size: 8 clients, epoll.
    let sizes: &[usize] = if quick {
        &[16, 1024]
    } else {
        &[16, 64, 256, 1024, 4096, 16384, 65536]
    };
    for &size in sizes {
        let msgs = (12_800_000 / size).clamp(200, 20_000);
        let a = args(&[
            "--clients",
            "8",
            "--msgs",
            &msgs.to_string(),
            "--payload",
            &size.to_string(),
            "--backend",
            "epoll",
        ]);
        match measure(&bin, &a, reps) {
            Ok(m) => push("payload", "epoll".into(), size as f64, m),
            Err(e) => failed.push(e),
        }
    }
    // One ping-pong pair next to N idle connections, per backend: the cost of watching fds.
    let _ = raise_nofile();
    let idles: &[usize] = if quick {
        &[0, 100]
    } else {
        &[0, 250, 500, 1000, 2000, 4000]
    };
    for backend in ["select", "poll", "epoll"] {
        for &idle in idles {
            if backend == "select" && idle > 1000 {
                continue;
            }
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            for _ in 0..reps {
                match idle_pingpong(&bin, backend, idle, if quick { 200 } else { 3000 }) {
                    Ok((a, b)) => {
                        p50.push(a);
                        p99.push(b);
                    }
                    Err(e) => failed.push(format!("idle {backend} {idle}: {e}")),
                }
            }
            if !p50.is_empty() {
                push(
                    "idle",
                    backend.to_string(),
                    idle as f64,
                    [0.0, 0.0, median(p50), median(p99), 0.0, 0.0, 0.0],
                );
            }
        }
    }
    // Ping-pong round trips: 1 and 4 pairs, Unix and TCP, 64 bytes.
    for transport in ["unix", "tcp"] {
        for pairs in [1usize, 4] {
            let rounds = if quick { "200" } else { "5000" };
            let a = args(&[
                "--clients",
                &(2 * pairs).to_string(),
                "--msgs",
                rounds,
                "--pattern",
                "pingpong",
                "--payload",
                "64",
                "--transport",
                transport,
            ]);
            match measure(&bin, &a, reps) {
                Ok(m) => push("pingpong", transport.to_string(), pairs as f64, m),
                Err(e) => failed.push(e),
            }
        }
    }

    let mut csv = String::from("sweep,series,x,msgs_per_s,mb_per_s,p50_us,p99_us,relay_kib\n");
    for p in &points {
        let _ = writeln!(
            csv,
            "{},{},{},{:.0},{:.2},{:.1},{:.1},{:.0}",
            p.sweep, p.series, p.x, p.msgs_per_s, p.mb_per_s, p.p50_us, p.p99_us, p.relay_kib
        );
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Medians of {reps} runs each (`relay-sim --json`, all verified clean).\n"
    );
    let _ = writeln!(
        md,
        "| clients | select msg/s | poll msg/s | epoll msg/s |\n|---:|---:|---:|---:|"
    );
    // A row's cells, one per backend ("-" where the backend did not run that point).
    let per_backend = |sweep: &str, x: f64, cell: fn(&Point) -> String| {
        ["select", "poll", "epoll"]
            .iter()
            .map(|b| {
                points
                    .iter()
                    .find(|p| p.sweep == sweep && p.series == *b && p.x == x)
                    .map_or("-".to_string(), cell)
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    for &n in clients {
        let cells = per_backend("clients", n as f64, |p| format!("{:.0}", p.msgs_per_s));
        let _ = writeln!(md, "| {n} | {cells} |");
    }
    let _ = writeln!(
        md,
        "\n| clients (20 msgs each) | fork+register per client (us): select / poll / epoll | exchange per client (us): select / poll / epoll |\n|---:|---|---|"
    );
    for &n in c10k {
        let fork = per_backend("c10k", n as f64, |p| {
            format!("{:.0}", 1e3 * p.fork_ms / p.x)
        });
        let exchange = per_backend("c10k", n as f64, |p| {
            format!("{:.0}", 1e3 * p.exchange_ms / p.x)
        });
        let _ = writeln!(
            md,
            "| {n} | {} | {} |",
            fork.replace(" | ", " / "),
            exchange.replace(" | ", " / ")
        );
    }
    let _ = writeln!(md, "\n| payload (bytes) | msg/s | MB/s | p50 (us) | relay RSS (KiB) |\n|---:|---:|---:|---:|---:|");
    for p in points.iter().filter(|p| p.sweep == "payload") {
        // Payloads under 32 bytes carry no send time: no latency.
        let p50 = if p.p50_us > 0.0 {
            format!("{:.0}", p.p50_us)
        } else {
            "-".into()
        };
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1} | {p50} | {:.0} |",
            p.x, p.msgs_per_s, p.mb_per_s, p.relay_kib
        );
    }
    let _ = writeln!(
        md,
        "\n| ping-pong | pairs | p50 round trip (us) | p99 (us) |\n|---|---:|---:|---:|"
    );
    for p in points.iter().filter(|p| p.sweep == "pingpong") {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} |",
            p.series, p.x, p.p50_us, p.p99_us
        );
    }
    let _ = writeln!(md, "\n| idle connections | select p50 (us) | poll p50 (us) | epoll p50 (us) |\n|---:|---:|---:|---:|");
    for &idle in idles {
        let cells = per_backend("idle", idle as f64, |p| format!("{:.1}", p.p50_us));
        let _ = writeln!(md, "| {idle} | {cells} |");
    }
    let write = |name: &str, text: &str| {
        if let Err(e) = std::fs::write(out.join(name), text) {
            eprintln!("relay-sim-sweep: cannot write {name}: {e}");
        }
    };
    write("sweep.csv", &csv);
    write("sweep.md", &md);
    write("clients.svg", &chart_clients(&points));
    write("c10k.svg", &chart_c10k(&points));
    write("payload.svg", &chart_payload(&points));
    write("pingpong.svg", &chart_pingpong(&points));
    write("idle.svg", &chart_idle(&points));
    print!("{md}");
    for f in &failed {
        eprintln!("relay-sim-sweep: FAILED: {f}");
    }
    eprintln!("relay-sim-sweep: wrote {}", out.display());
    std::process::exit(i32::from(!failed.is_empty()));
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// c10k.svg: fork+register and the exchange per client, against clients, per backend: flat
/// lines are linear phases.
fn chart_c10k(points: &[Point]) -> String {
    let mut svg = String::new();
    let r = (|| -> Res {
        let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let pts: Vec<&Point> = points.iter().filter(|p| p.sweep == "c10k").collect();
        let per_client = |p: &Point, v: f64| 1e3 * v / p.x;
        let top = pts
            .iter()
            .flat_map(|p| [per_client(p, p.fork_ms), per_client(p, p.exchange_ms)])
            .fold(1.0, f64::max);
        let xmax = pts.iter().map(|p| p.x).fold(1000.0, f64::max);
        let mut c = ChartBuilder::on(&root)
            .caption(
                "C10K: time per client, 20 messages each (flat = linear)",
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d((300f64..xmax * 1.3).log_scale(), 0f64..top * 1.2)?;
        c.configure_mesh()
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 17))
            .x_desc("clients (log scale)")
            .y_desc("µs per client")
            .x_label_formatter(&|x| si(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        let colors = [
            RGBColor(0xd6, 0x27, 0x28),
            RGBColor(0x1f, 0x77, 0xb4),
            RGBColor(0x2c, 0xa0, 0x2c),
        ];
        for (b, color) in ["select", "poll", "epoll"].iter().zip(colors) {
            let series: Vec<&&Point> = pts.iter().filter(|p| p.series == *b).collect();
            c.draw_series(LineSeries::new(
                series.iter().map(|p| (p.x, per_client(p, p.fork_ms))),
                color.stroke_width(3),
            ))?
            .label(format!("{b}: fork+register"))
            .legend(line_key(color.stroke_width(3)));
            c.draw_series(LineSeries::new(
                series.iter().map(|p| (p.x, per_client(p, p.exchange_ms))),
                color.stroke_width(1),
            ))?
            .label(format!("{b}: exchange"))
            .legend(line_key(color.stroke_width(1)));
        }
        legend(&mut c, SeriesLabelPosition::LowerRight)?;
        root.present()?;
        Ok(())
    })();
    or_note(r.map_err(|e| e.to_string()), svg, "c10k.svg")
}

fn chart_clients(points: &[Point]) -> String {
    let mut svg = String::new();
    let r: Res = (|| {
        let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let peak = points
            .iter()
            .filter(|p| p.sweep == "clients")
            .map(|p| p.msgs_per_s)
            .fold(1.0, f64::max);
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Throughput against clients, per backend (64-byte messages)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d((1.5f64..5000f64).log_scale(), 0f64..peak * 1.15)?;
        c.configure_mesh()
            .x_desc("clients (log scale)")
            .y_desc("messages / s")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| si(*y))
            .draw()?;
        for (k, (b, color)) in [("select", RED), ("poll", BLUE), ("epoll", GREEN)]
            .into_iter()
            .enumerate()
        {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.sweep == "clients" && p.series == b)
                .map(|p| (p.x, p.msgs_per_s))
                .collect();
            c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(b)
                .legend(line_key(color.stroke_width(2)));
            c.draw_series(
                pts.into_iter()
                    .map(move |p| Circle::new(p, 3 + k as u32, color.filled())),
            )?;
        }
        legend(&mut c, SeriesLabelPosition::UpperRight)?;
        root.present()?;
        Ok(())
    })();
    or_note(r.map_err(|e| e.to_string()), svg, "clients.svg")
}

fn chart_payload(points: &[Point]) -> String {
    let mut svg = String::new();
    let r: Res = (|| {
        let root = SVGBackend::with_string(&mut svg, (900, 700)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(350);
        let pts: Vec<&Point> = points.iter().filter(|p| p.sweep == "payload").collect();
        for (area, title, ylab, get, color) in [
            (
                &top,
                "Messages per second against payload size (8 clients, epoll)",
                "messages / s",
                (|p: &Point| p.msgs_per_s) as fn(&Point) -> f64,
                BLUE,
            ),
            (
                &bottom,
                "Payload throughput against payload size",
                "MB / s",
                |p: &Point| p.mb_per_s,
                RED,
            ),
        ] {
            let peak = pts.iter().map(|p| get(p)).fold(1.0, f64::max);
            let mut c = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(80)
                .build_cartesian_2d((10f64..100_000f64).log_scale(), 0f64..peak * 1.15)?;
            c.configure_mesh()
                .x_desc("payload (bytes, log scale)")
                .y_desc(ylab)
                .x_label_formatter(&|x| {
                    if *x >= 1024.0 {
                        format!("{:.0} KiB", x / 1024.0)
                    } else {
                        format!("{x:.0} B")
                    }
                })
                .y_label_formatter(&|y| si(*y))
                .draw()?;
            let series: Vec<(f64, f64)> = pts.iter().map(|p| (p.x, get(p))).collect();
            c.draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?;
            c.draw_series(
                series
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )?;
        }
        root.present()?;
        Ok(())
    })();
    or_note(r.map_err(|e| e.to_string()), svg, "payload.svg")
}

fn chart_pingpong(points: &[Point]) -> String {
    let mut svg = String::new();
    let r: Res = (|| {
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let pts: Vec<&Point> = points.iter().filter(|p| p.sweep == "pingpong").collect();
        let peak = pts.iter().map(|p| p.p99_us).fold(1.0, f64::max);
        let labels: Vec<String> = pts
            .iter()
            .map(|p| format!("{} x{}", p.series, p.x))
            .collect();
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Ping-pong round trip (64 bytes, one message in flight per pair)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(pts.len() as f64 - 0.5).max(0.5), 0f64..peak * 1.2)?;
        c.configure_mesh()
            .x_desc("transport x pairs")
            .y_desc("round trip (µs)")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_labels(pts.len().max(1))
            .x_label_formatter(&|x| labels.get(x.round() as usize).cloned().unwrap_or_default())
            .disable_x_mesh()
            .draw()?;
        for (k, p) in pts.iter().enumerate() {
            let x = k as f64;
            c.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.3, 0.0), (x, p.p50_us)],
                BLUE.filled(),
            )))?;
            c.draw_series(std::iter::once(Rectangle::new(
                [(x, 0.0), (x + 0.3, p.p99_us)],
                RED.mix(0.6).filled(),
            )))?;
        }
        c.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (0.0, 0.0)],
            BLUE.filled(),
        )))?
        .label("p50")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], BLUE.filled()));
        c.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (0.0, 0.0)],
            RED.mix(0.6).filled(),
        )))?
        .label("p99")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], RED.mix(0.6).filled()));
        legend(&mut c, SeriesLabelPosition::UpperLeft)?;
        root.present()?;
        Ok(())
    })();
    or_note(r.map_err(|e| e.to_string()), svg, "pingpong.svg")
}

/// Raises the open-files limit to its hard maximum (thousands of idle connections).
fn raise_nofile() -> nix::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
}

/// One protocol frame: len:u32 (type and body), type, body.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn read_frame(s: &mut std::os::unix::net::UnixStream) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// A connection to the relay, registered as `name`.
fn registered(path: &Path, name: &str) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.write_all(&frame(1, name.as_bytes()))?;
    let w = read_frame(&mut s)?;
    if w.first() != Some(&2) {
        return Err(std::io::Error::other(format!("HELLO {name}: no WELCOME")));
    }
    Ok(s)
}

/// p50 and p99 round trip (us) of one pair through `relay-sim relay --backend B` while `idle`
/// other connections are registered and silent.
fn idle_pingpong(
    bin: &Path,
    backend: &str,
    idle: usize,
    rounds: usize,
) -> Result<(f64, f64), String> {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("relay-sim-sweep-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let sock = dir.join("relay.sock");
    let _ = std::fs::remove_file(&sock);
    let mut relay = Command::new(bin)
        .args([
            "relay",
            "--quiet",
            // The textbook loop: blocking waits only, so the curve is the wait's own cost.
            "--spin",
            "off",
            "--backend",
            backend,
            "--max-clients",
            &(idle + 16).to_string(),
            "--listen",
        ])
        .arg(&sock)
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| -> Result<(f64, f64), String> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if std::time::Instant::now() > until {
                return Err("the relay never listened".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut quiet = Vec::with_capacity(idle);
        for k in 0..idle {
            quiet.push(
                registered(&sock, &format!("idle{k}")).map_err(|e| format!("idle {k}: {e}"))?,
            );
        }
        let mut a = registered(&sock, "pa").map_err(|e| e.to_string())?;
        let mut b = registered(&sock, "pb").map_err(|e| e.to_string())?;
        let ping = {
            let mut body = vec![2u8];
            body.extend_from_slice(b"pb");
            body.extend_from_slice(&[7u8; 64]);
            frame(3, &body)
        };
        let pong = {
            let mut body = vec![2u8];
            body.extend_from_slice(b"pa");
            body.extend_from_slice(&[9u8; 64]);
            frame(3, &body)
        };
        let mut rtts = Vec::with_capacity(rounds);
        for r in 0..rounds + 100 {
            let t = std::time::Instant::now();
            a.write_all(&ping).map_err(|e| e.to_string())?;
            read_frame(&mut b).map_err(|e| e.to_string())?;
            b.write_all(&pong).map_err(|e| e.to_string())?;
            read_frame(&mut a).map_err(|e| e.to_string())?;
            if r >= 100 {
                rtts.push(t.elapsed().as_secs_f64() * 1e6); // after 100 rounds of warm-up
            }
        }
        drop(quiet);
        rtts.sort_by(|x, y| x.total_cmp(y));
        let q = |f: f64| rtts[((rtts.len() as f64 * f) as usize).min(rtts.len() - 1)];
        Ok((q(0.5), q(0.99)))
    })();
    let _ = relay.kill();
    let _ = relay.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn chart_idle(points: &[Point]) -> String {
    let mut svg = String::new();
    let r: Res = (|| {
        let root = SVGBackend::with_string(&mut svg, (900, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let pts: Vec<&Point> = points.iter().filter(|p| p.sweep == "idle").collect();
        let peak = pts.iter().map(|p| p.p50_us).fold(1.0, f64::max);
        let right = pts.iter().map(|p| p.x).fold(100.0, f64::max) * 1.05;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "One ping-pong pair next to N idle connections: what watching fds costs",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..right, 0f64..peak * 1.2)?;
        c.configure_mesh()
            .x_desc("idle connections the relay also watches")
            .y_desc("p50 round trip (µs)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (b, color) in [("select", RED), ("poll", BLUE), ("epoll", GREEN)] {
            let series: Vec<(f64, f64)> = pts
                .iter()
                .filter(|p| p.series == b)
                .map(|p| (p.x, p.p50_us))
                .collect();
            c.draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                .label(b)
                .legend(line_key(color.stroke_width(2)));
            c.draw_series(
                series
                    .into_iter()
                    .map(move |p| Circle::new(p, 4, color.filled())),
            )?;
        }
        legend(&mut c, SeriesLabelPosition::UpperLeft)?;
        root.present()?;
        Ok(())
    })();
    or_note(r.map_err(|e| e.to_string()), svg, "idle.svg")
}
