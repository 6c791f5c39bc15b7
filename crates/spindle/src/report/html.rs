//! The report as one HTML page: inline CSS and SVG, no scripts, nothing fetched.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::verdict::{advice, Limit};
use super::{Recorder, Sample, SlotTrack};

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// Slots drawn in the per-slot charts.
const CHART_SLOTS: usize = 5;
/// Rows in the slot table.
const TABLE_SLOTS: usize = 50;

type Series = (String, Vec<(f64, f64)>);

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

/// A line chart of `series` over time, in a 720×220 SVG.
fn line_chart(id: &str, title: &str, unit: &str, series: &[Series]) -> String {
    chart(id, title, unit, series, 0)
}

/// Per-slot charts start at the second color, so a slot has one color in every chart
/// (the first goes to the crawl-wide line where there is one).
fn chart(id: &str, title: &str, unit: &str, series: &[Series], color_offset: usize) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 220.0, 58.0, 12.0, 26.0, 30.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let points: usize = series.iter().map(|(_, p)| p.len()).sum();
    let t_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(t, _)| *t))
        .fold(0.0, f64::max)
        .max(1.0);
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
            .fold(0.0, f64::max),
    );
    let x = |t: f64| left + t / t_max * pw;
    let y = |v: f64| top + ph - v / y_max * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<figure class="chart"><svg id="{id}" data-points="{points}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" aria-label="{title}"><title>{title}</title>
<text x="{left}" y="16" class="t">{title}</text>"##,
        title = esc(title)
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="yl">{}</text>"##,
            left + pw,
            left - 6.0,
            y(v) + 4.0,
            fmt_num(v),
            yy = y(v)
        );
    }
    for i in 0..=6 {
        let t = t_max * i as f64 / 6.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" class="xl">{} s</text>"##,
            x(t),
            top + ph + 16.0,
            if t_max < 10.0 {
                format!("{t:.1}")
            } else {
                format!("{t:.0}")
            }
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="12" y="{:.1}" class="unit" transform="rotate(-90 12 {:.1})">{}</text>"##,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(unit)
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[(i + color_offset) % COLORS.len()];
        let coords: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline class="series" data-name="{}" fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"##,
            esc(name),
            coords.join(" ")
        );
        if pts.len() == 1 {
            let (t, v) = pts[0];
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"##,
                x(t),
                y(v)
            );
        }
    }
    s += "</svg><figcaption>";
    for (i, (name, _)) in series.iter().enumerate() {
        let _ = write!(
            s,
            r##"<span class="key"><i style="background:{}"></i>{}</span> "##,
            COLORS[(i + color_offset) % COLORS.len()],
            esc(name)
        );
    }
    s += "</figcaption></figure>\n";
    s
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    // Quarters of these are round numbers.
    for m in [1.0, 2.0, 4.0, 6.0, 8.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn pct(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn rates(samples: &[Sample]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .map(|w| {
            let dt = (w[1].t - w[0].t).max(1e-3);
            (w[1].t, (w[1].pages - w[0].pages) as f64 / dt)
        })
        .collect()
}

/// One value per sample for each of `slots`; `None` leaves a gap filled with the previous value.
fn per_slot(
    samples: &[Sample],
    slots: &[(usize, &SlotTrack)],
    value: impl Fn(&super::SlotPoint) -> f64,
    absent: Option<f64>,
) -> Vec<Series> {
    slots
        .iter()
        .map(|(id, track)| {
            let mut last = None;
            let pts = samples
                .iter()
                .filter_map(|s| {
                    let v = s
                        .slots
                        .iter()
                        .find(|p| p.slot == *id)
                        .map(&value)
                        .or(absent)
                        .or(last)?;
                    last = Some(v);
                    Some((s.t, v))
                })
                .collect();
            (track.key.clone(), pts)
        })
        .collect()
}

pub(super) fn render(r: &Recorder) -> String {
    let samples = &r.samples;
    let mut busiest: Vec<(usize, &SlotTrack)> = r
        .slots
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.key.is_empty())
        .collect();
    busiest.sort_by_key(|(_, t)| std::cmp::Reverse(t.responses));
    let chart_slots = &busiest[..busiest.len().min(CHART_SLOTS)];
    let last = samples.last();
    let elapsed = last.map_or(0.0, |s| s.t);
    let pages = last.map_or(0, |s| s.pages);
    let status = match &r.finished {
        Some(reason) => format!("finished ({})", esc(reason)),
        None => "running (this page is rewritten every 2 s; reload it)".to_string(),
    };
    let started = httpdate::fmt_http_date(r.started_wall);

    let mut body = String::new();
    let _ = writeln!(
        body,
        "<h1>spindle crawl report</h1>\n<p class=\"sub\">Started {started}; {status}. \
         {pages} pages in {elapsed:.1} s ({:.1} pages/s). {} slots.</p>",
        pages as f64 / elapsed.max(1e-3),
        busiest.len()
    );

    // What limited the crawl.
    body += "<h2>What limited the crawl</h2>\n";
    let total: u64 = r.crawl_limits.values().sum();
    let mut shares: Vec<(Limit, f64)> = r
        .crawl_limits
        .iter()
        .map(|(l, n)| (*l, *n as f64 / total.max(1) as f64))
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    if let Some((top, share)) = shares.first() {
        let slot = busiest.first().map(|(_, t)| *t);
        let _ = write!(
            body,
            "<p class=\"verdict\"><b>{}</b>, {} of the time. {}</p>\n<ul>",
            top.label(),
            pct(*share),
            esc(&advice(*top, &r.knobs, slot))
        );
        for (limit, share) in shares.iter().skip(1) {
            let _ = write!(body, "<li>{}: {}</li>", limit.label(), pct(*share));
        }
        body += "</ul>\n";
    } else {
        body += "<p>Nothing measured yet.</p>\n";
    }
    let busy: Vec<_> = busiest
        .iter()
        .filter(|(_, t)| t.responses > 0)
        .take(CHART_SLOTS)
        .collect();
    if !busy.is_empty() {
        body += "<h3>The busiest slots</h3>\n<ul class=\"slots\">";
        for (_, t) in busy {
            if let Some((limit, share)) = t.main_limit() {
                let _ = write!(
                    body,
                    "<li><b>{}</b>: {}, {} of its busy time. {}</li>",
                    esc(&t.key),
                    limit.label(),
                    pct(share),
                    esc(&advice(limit, &r.knobs, Some(t)))
                );
            }
        }
        body += "</ul>\n";
    }

    // Charts.
    body += "<h2>Over time</h2>\n<div class=\"grid2\">\n";
    body += &line_chart(
        "pages",
        "Pages per second",
        "pages/s",
        &[("pages/s".to_string(), rates(samples))],
    );
    let mut in_flight = vec![(
        "all slots".to_string(),
        samples.iter().map(|s| (s.t, s.in_flight as f64)).collect(),
    )];
    in_flight.extend(per_slot(
        samples,
        chart_slots,
        |p| p.active as f64,
        Some(0.0),
    ));
    body += &line_chart("inflight", "Requests in flight", "requests", &in_flight);
    body += &chart(
        "delay",
        "Each slot's delay (AutoThrottle moves it)",
        "ms",
        &per_slot(samples, chart_slots, |p| p.delay_ms, None),
        1,
    );
    body += &chart(
        "concurrency",
        "Each slot's concurrency limit (the adaptive mode moves it)",
        "requests",
        &per_slot(samples, chart_slots, |p| p.limit as f64, None),
        1,
    );
    let lat = |i: usize| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter_map(|s| s.latency.map(|l| (s.t, l[i])))
            .collect()
    };
    body += &line_chart(
        "latency",
        "Latency to the response headers",
        "ms",
        &[
            ("p50".to_string(), lat(0)),
            ("p90".to_string(), lat(1)),
            ("p99".to_string(), lat(2)),
        ],
    );
    let mut kinds: BTreeMap<&str, ()> = BTreeMap::new();
    for s in samples {
        for k in s.errors.keys() {
            kinds.insert(k, ());
        }
    }
    let mut errors: Vec<Series> = kinds
        .keys()
        .map(|k| {
            (
                k.to_string(),
                samples
                    .iter()
                    .map(|s| (s.t, s.errors.get(*k).copied().unwrap_or(0) as f64))
                    .collect(),
            )
        })
        .collect();
    errors.push((
        "retries".to_string(),
        samples.iter().map(|s| (s.t, s.retries as f64)).collect(),
    ));
    errors.push((
        "Retry-After pauses".to_string(),
        samples
            .iter()
            .map(|s| (s.t, s.retry_after as f64))
            .collect(),
    ));
    body += &line_chart(
        "errors",
        "Errors by kind, retries and Retry-After pauses (running totals)",
        "count",
        &errors,
    );
    body += &line_chart(
        "queued",
        "Requests queued in the frontier",
        "requests",
        &[(
            "queued".to_string(),
            samples.iter().map(|s| (s.t, s.queued as f64)).collect(),
        )],
    );
    body += "</div>\n";

    // The slot table.
    let _ = writeln!(
        body,
        "<h2>Slots</h2>\n<table><thead><tr><th>slot</th><th>responses</th><th>429/503</th>\
         <th>most in flight</th><th>cap</th><th>concurrency now (lowest)</th><th>delay now (highest)</th>\
         <th>latency p50 / p90 / p99</th><th>mostly limited by</th></tr></thead><tbody>"
    );
    for (_, t) in busiest.iter().take(TABLE_SLOTS) {
        let pace = t.last;
        let lat = t
            .latency_summary()
            .map(|l| format!("{:.0} / {:.0} / {:.0} ms", l[0], l[1], l[2]))
            .unwrap_or_else(|| "–".into());
        let limit = t
            .main_limit()
            .map(|(l, s)| format!("{} ({})", l.label(), pct(s)))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{:.0} ms ({:.0} ms)</td><td>{lat}</td><td>{limit}</td></tr>",
            esc(&t.key),
            t.responses,
            t.overloads,
            t.max_active,
            pace.map_or(0, |p| p.cap),
            pace.map_or(0, |p| p.limit),
            t.min_limit.unwrap_or(0),
            pace.map_or(0.0, |p| p.delay.as_secs_f64() * 1e3),
            t.max_delay_ms,
        );
    }
    if busiest.len() > TABLE_SLOTS {
        let _ = write!(
            body,
            "<tr><td colspan=\"9\">… and {} more slots</td></tr>",
            busiest.len() - TABLE_SLOTS
        );
    }
    body += "</tbody></table>\n";
    let k = &r.knobs;
    let _ = write!(
        body,
        "<p class=\"sub\">Settings: CONCURRENT_REQUESTS={}, per-slot cap={}{}, DOWNLOAD_DELAY={} s, AutoThrottle: {}.</p>",
        k.concurrent_requests,
        k.per_slot,
        if k.per_ip { " (per IP)" } else { "" },
        k.download_delay.as_secs_f64(),
        match k.autothrottle {
            None => "off".to_string(),
            Some(crate::settings::ThrottleMode::Delay) =>
                format!("delay mode, target concurrency {}", k.target_concurrency),
            Some(crate::settings::ThrottleMode::Adaptive) => "adaptive mode".to_string(),
        }
    );

    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>spindle crawl report</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1500px;padding:0 1em;color:#222}}
h1{{margin:0 0 .2em}} h2{{margin:1.2em 0 .4em;border-bottom:1px solid #ddd}}
.sub{{color:#555}} .verdict{{font-size:1.08em;background:#f4f7fb;padding:.6em .8em;border-left:4px solid #1f77b4}}
.grid2{{display:grid;grid-template-columns:repeat(auto-fit,minmax(620px,1fr));gap:10px}}
figure.chart{{margin:0;border:1px solid #e3e3e3;border-radius:4px;padding:4px}}
svg{{width:100%;height:auto;display:block}} .t{{font-weight:600;font-size:13px}}
.grid{{stroke:#e8e8e8}} .yl{{font-size:10px;text-anchor:end;fill:#555}} .xl{{font-size:10px;text-anchor:middle;fill:#555}}
.unit{{font-size:10px;text-anchor:middle;fill:#555}}
figcaption{{font-size:12px;padding:2px 6px}} .key i{{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ddd;padding:3px 6px;text-align:right}}
td:first-child,th:first-child,td:last-child{{text-align:left}} th{{background:#f4f4f4}}
</style></head><body>
{body}
</body></html>
"#
    )
}
