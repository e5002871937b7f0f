//! The report's two charts as inline SVG: hosts by outcome (a stacked bar)
//! and the waves on a timeline. Colours come from the page's CSS (one
//! `s-STATUS` class per outcome), so the charts, legends and badges agree;
//! every shape carries a `<title>` and every chart an `aria-label`, so the
//! numbers are there for a screen reader and a text search too.

use std::fmt::Write as _;

use indexmap::IndexMap;

use super::{OUTCOMES, label};
use crate::report::run_json::{ClientReport, WaveReport};
use crate::report::text::{Esc, format_ms, parse_time};
use crate::run::HostStatus;

/// Hosts by outcome as one bar, each outcome's share of it in its colour.
pub fn outcome_bar(counts: &IndexMap<HostStatus, usize>, total: usize) -> String {
    let summary: Vec<String> = OUTCOMES
        .iter()
        .filter(|s| counts[*s] > 0)
        .map(|s| format!("{} {}", counts[s], label(*s).to_lowercase()))
        .collect();
    let mut out = String::new();
    put!(
        out,
        r#"<svg class="bar" viewBox="0 0 1000 34" width="100%" height="34" preserveAspectRatio="none" role="img" aria-label="{} hosts: {}">"#,
        total,
        Esc(&summary.join(", "))
    );
    put!(
        out,
        r##"<rect x="0" y="0" width="1000" height="34" rx="4" fill="#eef1f4"/>"##
    );
    let mut x = 0.0;
    for status in OUTCOMES {
        let n = counts[&status];
        if n == 0 || total == 0 {
            continue;
        }
        let w = 1000.0 * n as f64 / total as f64;
        put!(
            out,
            r#"<rect class="seg s-{}" x="{x:.2}" y="0" width="{w:.2}" height="34"><title>{}: {n}</title></rect>"#,
            status.as_str(),
            label(status)
        );
        x += w;
    }
    out.push_str("</svg>\n");
    out
}

/// The hosts of `wave` by outcome.
pub fn wave_counts(client: &ClientReport, wave: &WaveReport) -> IndexMap<HostStatus, usize> {
    let mut counts: IndexMap<HostStatus, usize> = OUTCOMES.iter().map(|s| (*s, 0)).collect();
    for name in &wave.hosts {
        if let Some(host) = client.hosts.iter().find(|h| &h.name == name) {
            *counts.entry(host.status).or_default() += 1;
        }
    }
    counts
}

const WIDTH: f64 = 720.0;
/// Left of the plot: the wave's name.
const LEFT: f64 = 64.0;
/// Right of the plot: room for the label after the last bar.
const RIGHT: f64 = 150.0;
const ROW: f64 = 34.0;
const TOP: f64 = 28.0;

/// The waves on a time axis: each a bar from its start to its end, split
/// by its hosts' outcomes, labelled with its host count and duration.
pub fn timeline(client: &ClientReport) -> String {
    let times = |w: &WaveReport| {
        (
            w.started_at.as_deref().and_then(parse_time),
            w.finished_at.as_deref().and_then(parse_time),
        )
    };
    let starts: Vec<_> = client.waves.iter().filter_map(|w| times(w).0).collect();
    let Some(t0) = starts.iter().min().copied() else {
        return "<p class=\"muted\">No wave started.</p>\n".to_string();
    };
    let t1 = client
        .waves
        .iter()
        .flat_map(|w| {
            let (s, f) = times(w);
            [s, f]
        })
        .flatten()
        .max()
        .unwrap_or(t0);
    let span = ((t1 - t0).num_milliseconds()).max(1000) as f64;
    let plot = WIDTH - LEFT - RIGHT;
    let x_of = |t: chrono::DateTime<chrono::FixedOffset>| {
        LEFT + plot * ((t - t0).num_milliseconds().max(0) as f64 / span)
    };
    let height = TOP + ROW * client.waves.len() as f64 + 8.0;
    let mut out = String::new();
    put!(
        out,
        r#"<svg class="timeline" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="{} waves from {} to {}">"#,
        client.waves.len(),
        Esc(&t0.to_rfc3339()),
        Esc(&t1.to_rfc3339())
    );
    // The axis: five ticks, as times of day (the table below has dates).
    put!(
        out,
        r#"<line class="axis" x1="{LEFT}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}"/>"#,
        y = TOP - 6.0,
        x2 = LEFT + plot
    );
    for i in 0..=4 {
        let x = LEFT + plot * i as f64 / 4.0;
        let t = t0 + chrono::Duration::milliseconds((span * i as f64 / 4.0) as i64);
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        put!(
            out,
            r#"<line class="axis" x1="{x:.1}" y1="{a:.1}" x2="{x:.1}" y2="{height:.1}"/><text class="tick" x="{x:.1}" y="{ty:.1}" text-anchor="{anchor}">{}</text>"#,
            t.format("%H:%M:%S"),
            a = TOP - 10.0,
            ty = TOP - 14.0
        );
    }
    for (row, wave) in client.waves.iter().enumerate() {
        let y = TOP + ROW * row as f64 + 4.0;
        let bar = ROW - 12.0;
        let mid = y + bar / 2.0 + 4.5;
        put!(
            out,
            r#"<text x="0" y="{mid:.1}" font-weight="600">Wave {}</text>"#,
            wave.index
        );
        let hosts = plural(wave.hosts.len(), "host");
        let (Some(start), end) = times(wave) else {
            put!(
                out,
                r#"<text class="tick" x="{LEFT}" y="{mid:.1}" font-style="italic">not started · {hosts}</text>"#
            );
            continue;
        };
        let x = x_of(start);
        let w = (x_of(end.unwrap_or(t1)) - x).max(4.0);
        let how_long = match end {
            Some(end) => format_ms((end - start).num_milliseconds().max(0) as u64),
            None => "did not finish".to_string(),
        };
        put!(
            out,
            r#"<text x="{tx:.1}" y="{mid:.1}">{hosts} · {}</text>"#,
            Esc(&how_long),
            tx = x + w + 6.0
        );
        let counts = wave_counts(client, wave);
        let total: usize = counts.values().sum();
        let mut sx = x;
        for status in OUTCOMES {
            let n = counts[&status];
            if n == 0 || total == 0 {
                continue;
            }
            let sw = w * n as f64 / total as f64;
            put!(
                out,
                r#"<rect class="seg s-{}" x="{sx:.2}" y="{y:.1}" width="{sw:.2}" height="{bar:.1}"><title>Wave {}: {n} {}</title></rect>"#,
                status.as_str(),
                wave.index,
                label(status).to_lowercase()
            );
            sx += sw;
        }
        if end.is_none() {
            put!(
                out,
                r#"<rect class="open" x="{x:.2}" y="{y:.1}" width="{w:.2}" height="{bar:.1}"/>"#
            );
        }
    }
    out.push_str("</svg>\n");
    let zone = if t0.offset().local_minus_utc() == 0 {
        "UTC".to_string()
    } else {
        t0.format("UTC%:z").to_string()
    };
    put!(
        out,
        "<p class=\"outlabel\">Times of day in {zone}; each bar's colours show its hosts by outcome.</p>\n"
    );
    out
}

pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
