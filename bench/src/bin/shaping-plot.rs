//! `shaping-plot REPORT.json OUT_DIR [DOMAIN...]`: charts and figures of a
//! `sluice-bench run --json` report's time series, for docs/shaping.md.
//!
//! For each domain, `OUT_DIR/<domain>.png` shows the delivered rate (and
//! 4xx replies) a second with the SUT's allowed rate on top, and the
//! allowed and open connections below. On stdout: a markdown table with,
//! per domain, the delivered rate after 30 s of warm-up (until its mail
//! ran out), the share of attempts answered 4xx in that window, the
//! connections made and the replies received while the receiver had the
//! sender suspended.
//!
//! Text needs a TrueType font: `--font PATH` or `SHAPING_PLOT_FONT`,
//! default DejaVu Sans from the usual Debian location.

use plotters::prelude::*;
use sluice_bench::run::{RunReport, Sample};
use std::path::{Path, PathBuf};

const WARMUP_SECS: f64 = 30.0;

fn main() {
    if let Err(e) = run() {
        eprintln!("shaping-plot: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut font = std::env::var("SHAPING_PLOT_FONT")
        .unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
    if let Some(i) = args.iter().position(|a| a == "--font") {
        if i + 1 >= args.len() {
            return Err("--font needs a path".into());
        }
        font = args.remove(i + 1);
        args.remove(i);
    }
    let (Some(report), Some(out)) = (args.first(), args.get(1)) else {
        return Err("usage: shaping-plot [--font TTF] REPORT.json OUT_DIR [DOMAIN...]".into());
    };
    let text = std::fs::read_to_string(report).map_err(|e| format!("{report}: {e}"))?;
    let report: RunReport = serde_json::from_str(&text).map_err(|e| format!("{report}: {e}"))?;
    if report.series.is_empty() {
        return Err("the report has no time series (sluice-bench run --json)".into());
    }
    let mut domains: Vec<String> = args.iter().skip(2).cloned().collect();
    if domains.is_empty() {
        domains = report
            .series
            .last()
            .map(|s| s.domains.keys().cloned().collect())
            .unwrap_or_default();
    }
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let font_ok = std::fs::read(&font)
        .ok()
        .map(|bytes| {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
        .unwrap_or(false);
    if !font_ok {
        eprintln!("shaping-plot: no font at {font}: charts without text");
    }
    println!("| domain | delivered msgs/s (t ≥ 30 s) | 4xx % of attempts | connections | suspended replies | conns while suspended |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for d in &domains {
        let f = figures(&report.series, d);
        println!(
            "| {d} | {:.1} | {:.1} | {} | {} | {} |",
            f.rate, f.tempfail_pct, f.connections, f.suspended, f.conns_in_suspension
        );
        let path = out.join(format!("{d}.png"));
        chart(&report.series, d, &path, font_ok).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Per-second series of one domain: (t, delivered/s, 4xx/s, allowed rate,
/// allowed connections, open connections).
type Row = (f64, f64, f64, Option<f64>, Option<u64>, Option<u64>);

fn rows(series: &[Sample], d: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let mut prev: Option<(f64, u64, u64)> = None;
    for s in series {
        let Some(x) = s.domains.get(d) else { continue };
        // Rates over whole seconds: the series is sampled more often.
        if prev.is_some_and(|(t0, _, _)| s.t.floor() <= t0.floor()) {
            continue;
        }
        if let Some((t0, a0, f0)) = prev {
            let dt = (s.t - t0).max(1e-3);
            out.push((
                s.t,
                x.accepted.saturating_sub(a0) as f64 / dt,
                x.tempfailed.saturating_sub(f0) as f64 / dt,
                x.rate,
                x.concurrency,
                x.active,
            ));
        }
        prev = Some((s.t, x.accepted, x.tempfailed));
    }
    out
}

struct Figures {
    rate: f64,
    tempfail_pct: f64,
    connections: u64,
    suspended: u64,
    conns_in_suspension: u64,
}

fn figures(series: &[Sample], d: &str) -> Figures {
    let pts: Vec<(f64, u64, u64, u64, u64)> = series
        .iter()
        .filter_map(|s| {
            s.domains
                .get(d)
                .map(|x| (s.t, x.accepted, x.tempfailed, x.connections, x.suspended))
        })
        .collect();
    let last = pts.last().copied().unwrap_or_default();
    // The window: from the warm-up's end until the domain's mail ran out
    // (its accepted count reached its final value).
    let end = pts.iter().find(|p| p.1 >= last.1).map_or(last.0, |p| p.0);
    let start = pts.iter().find(|p| p.0 >= WARMUP_SECS).copied();
    let stop = pts.iter().rev().find(|p| p.0 <= end).copied();
    let (rate, tempfail_pct) = match (start, stop) {
        (Some(a), Some(b)) if b.0 > a.0 => {
            let acc = b.1.saturating_sub(a.1) as f64;
            let tf = b.2.saturating_sub(a.2) as f64;
            (acc / (b.0 - a.0), 100.0 * tf / (acc + tf).max(1.0))
        }
        _ => (0.0, 0.0),
    };
    // Connections made between the first and the last suspended reply.
    let first = pts.iter().find(|p| p.4 > 0).copied();
    let lastsusp = pts.iter().find(|p| p.4 >= last.4).copied();
    let conns_in_suspension = match (first, lastsusp) {
        (Some(a), Some(b)) if last.4 > 0 => b.3.saturating_sub(a.3),
        _ => 0,
    };
    Figures {
        rate,
        tempfail_pct,
        connections: last.3,
        suspended: last.4,
        conns_in_suspension,
    }
}

fn chart(series: &[Sample], d: &str, path: &Path, text: bool) -> Result<(), String> {
    let rows = rows(series, d);
    let t_max = rows.last().map_or(1.0, |r| r.0).max(1.0);
    let y_rate = rows
        .iter()
        .map(|r| r.1.max(r.2).max(r.3.unwrap_or(0.0)))
        .fold(1.0f64, f64::max)
        * 1.1;
    let y_conn = rows
        .iter()
        .map(|r| r.4.unwrap_or(0).max(r.5.unwrap_or(0)))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.2;
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(360);
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let mut c = panel(
        &top,
        &format!("{d}: messages a second"),
        t_max,
        y_rate,
        text,
    )?;
    c.draw_series(LineSeries::new(
        rows.iter().map(|r| (r.0, r.1)),
        BLUE.stroke_width(2),
    ))
    .map_err(e)?
    .label("delivered")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
    c.draw_series(LineSeries::new(rows.iter().map(|r| (r.0, r.2)), RED))
        .map_err(e)?
        .label("4xx")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RED));
    c.draw_series(LineSeries::new(
        rows.iter().filter_map(|r| r.3.map(|v| (r.0, v))),
        BLACK.stroke_width(1),
    ))
    .map_err(e)?
    .label("allowed rate")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK));
    if text {
        legend(&mut c)?;
    }
    let mut c = panel(&bottom, &format!("{d}: connections"), t_max, y_conn, text)?;
    c.draw_series(LineSeries::new(
        rows.iter().filter_map(|r| r.4.map(|v| (r.0, v as f64))),
        BLACK.stroke_width(2),
    ))
    .map_err(e)?
    .label("allowed")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK));
    c.draw_series(LineSeries::new(
        rows.iter().filter_map(|r| r.5.map(|v| (r.0, v as f64))),
        GREEN,
    ))
    .map_err(e)?
    .label("open")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], GREEN));
    if text {
        legend(&mut c)?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

use plotters::coord::types::RangedCoordf64;

type Panel<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: time on x, `0..y_max` on y; captions, axes and labels only
/// with `text` (the font may be missing).
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    t_max: f64,
    y_max: f64,
    text: bool,
) -> Result<Panel<'a, 'b>, String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let mut c = ChartBuilder::on(area);
    if text {
        c.caption(caption, ("sans-serif", 18));
    }
    let mut c = c
        .margin(10)
        .x_label_area_size(if text { 25 } else { 0 })
        .y_label_area_size(if text { 45 } else { 0 })
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(e)?;
    if text {
        c.configure_mesh().x_desc("s").draw().map_err(e)?;
    }
    Ok(c)
}

/// The series legend of a panel.
fn legend<'a, 'b: 'a>(c: &mut Panel<'a, 'b>) -> Result<(), String> {
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}
