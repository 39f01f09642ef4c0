//! Inline SVG charts generated from data, for the self-contained HTML reports (no scripts, no
//! fonts or files to fetch).

use std::fmt::Write;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 340.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// A named line of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// Drawn above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// Axis ranges; taken from the data when absent.
    pub x_range: Option<(f64, f64)>,
    /// Axis ranges; taken from the data when absent.
    pub y_range: Option<(f64, f64)>,
    /// The lines.
    pub series: Vec<Series>,
    /// A marked point with its caption (e.g. the operating threshold).
    pub mark: Option<(f64, f64, String)>,
    /// Draw the dashed y = x diagonal (chance, on a ROC curve).
    pub diagonal: bool,
}

/// Escapes text for HTML and SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The axes' scale: data coordinates to pixels.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x.0) / (self.x.1 - self.x.0) * (WIDTH - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - (y - self.y.0) / (self.y.1 - self.y.0) * (HEIGHT - TOP - BOTTOM)
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

fn tick_label(v: f64, span: f64) -> String {
    if span >= 20.0 {
        format!("{v:.0}")
    } else if span >= 2.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The frame, axes, ticks, title and axis labels.
fn axes(out: &mut String, frame: &Frame, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11" role="img"><title>{t}</title><text x="{cx}" y="20" text-anchor="middle" font-size="14">{t}</text>"#,
        t = escape(title),
        cx = WIDTH / 2.0
    );
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let _ = write!(
        out,
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>"##,
        w = x1 - x0,
        h = y1 - y0
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let (xv, yv) = (
            frame.x.0 + f * (frame.x.1 - frame.x.0),
            frame.y.0 + f * (frame.y.1 - frame.y.0),
        );
        let (px, py) = (frame.px(xv), frame.py(yv));
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" y1="{y1}" x2="{px:.1}" y2="{y0}" stroke="#eee"/><text x="{px:.1}" y="{ty}" text-anchor="middle">{xl}</text><line x1="{x0}" y1="{py:.1}" x2="{x1}" y2="{py:.1}" stroke="#eee"/><text x="{tx}" y="{py:.1}" text-anchor="end" dominant-baseline="middle">{yl}</text>"##,
            ty = y1 + 14.0,
            tx = x0 - 4.0,
            xl = tick_label(xv, frame.x.1 - frame.x.0),
            yl = tick_label(yv, frame.y.1 - frame.y.0),
        );
    }
    let _ = write!(
        out,
        r#"<text x="{cx}" y="{lx}" text-anchor="middle">{xl}</text><text transform="translate(14 {cy}) rotate(-90)" text-anchor="middle">{yl}</text>"#,
        cx = (x0 + x1) / 2.0,
        lx = HEIGHT - 12.0,
        cy = (y0 + y1) / 2.0,
        xl = escape(x_label),
        yl = escape(y_label)
    );
}

/// Renders a line chart as an `<svg>` element.
pub fn line_chart(chart: &LineChart) -> String {
    let all = || chart.series.iter().flat_map(|s| s.points.iter());
    let frame = Frame {
        x: chart.x_range.unwrap_or_else(|| range(all().map(|p| p.0))),
        y: chart.y_range.unwrap_or_else(|| range(all().map(|p| p.1))),
    };
    let mut out = String::new();
    axes(
        &mut out,
        &frame,
        &chart.title,
        &chart.x_label,
        &chart.y_label,
    );
    if chart.diagonal {
        let _ = write!(
            out,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#aaa" stroke-dasharray="4 4"/>"##,
            frame.px(frame.x.0.max(frame.y.0)),
            frame.py(frame.x.0.max(frame.y.0)),
            frame.px(frame.x.1.min(frame.y.1)),
            frame.py(frame.x.1.min(frame.y.1))
        );
    }
    for (i, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = series
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", frame.px(x), frame.py(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        if series.points.len() <= 30 {
            for &(x, y) in &series.points {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                    frame.px(x),
                    frame.py(y)
                );
            }
        }
        let ly = TOP + 14.0 + 14.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{lx}" y="{ry}" width="10" height="10" fill="{colour}"/><text x="{tx}" y="{ly}">{n}</text>"#,
            lx = WIDTH - RIGHT - 170.0,
            ry = ly - 9.0,
            tx = WIDTH - RIGHT - 156.0,
            n = escape(&series.name)
        );
    }
    if let Some((x, y, caption)) = &chart.mark {
        let _ = write!(
            out,
            r##"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="none" stroke="#000" stroke-width="2"/><text x="{tx:.1}" y="{ty:.1}">{c}</text>"##,
            px = frame.px(*x),
            py = frame.py(*y),
            tx = frame.px(*x) + 8.0,
            ty = frame.py(*y) + 16.0,
            c = escape(caption)
        );
    }
    out.push_str("</svg>");
    out
}

/// Renders a histogram of `values` in `bins` equal bins, with a dashed vertical line at `cut`
/// and its caption, as an `<svg>` element.
pub fn histogram(
    title: &str,
    x_label: &str,
    values: &[usize],
    bins: usize,
    cut: Option<(f64, &str)>,
) -> String {
    let max = values.iter().copied().max().unwrap_or(1).max(1) as f64;
    let width = (max / bins.max(1) as f64).ceil().max(1.0);
    let mut counts = vec![0usize; bins.max(1)];
    for &v in values {
        let bin = ((v as f64 / width) as usize).min(counts.len() - 1);
        counts[bin] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let frame = Frame {
        x: (0.0, width * counts.len() as f64),
        y: (0.0, top * 1.05),
    };
    let mut out = String::new();
    axes(&mut out, &frame, title, x_label, "reviews");
    for (i, &c) in counts.iter().enumerate() {
        let (x0, x1) = (frame.px(i as f64 * width), frame.px((i + 1) as f64 * width));
        let y = frame.py(c as f64);
        let _ = write!(
            out,
            r##"<rect x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#1f77b4" fill-opacity="0.7"><title>{lo}-{hi}: {c}</title></rect>"##,
            w = (x1 - x0 - 1.0).max(0.5),
            h = frame.py(0.0) - y,
            lo = (i as f64 * width) as usize,
            hi = ((i + 1) as f64 * width) as usize,
        );
    }
    if let Some((x, caption)) = cut {
        let px = frame.px(x);
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{b}" stroke="#d62728" stroke-width="2" stroke-dasharray="5 3"/><text x="{tx:.1}" y="{ty}" fill="#d62728">{c}</text>"##,
            b = HEIGHT - BOTTOM,
            tx = px + 4.0,
            ty = TOP + 14.0,
            c = escape(caption)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_draws_every_series_and_escapes_text() {
        let svg = line_chart(&LineChart {
            title: "loss <per> epoch".into(),
            series: vec![
                Series {
                    name: "train".into(),
                    points: vec![(1.0, 0.5), (2.0, 0.3)],
                },
                Series {
                    name: "validation & more".into(),
                    points: vec![(1.0, 0.6), (2.0, 0.4)],
                },
            ],
            mark: Some((2.0, 0.3, "best".into())),
            ..LineChart::default()
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("loss &lt;per&gt; epoch"));
        assert!(svg.contains("validation &amp; more"));
        assert!(svg.contains(">best<"));
    }

    #[test]
    fn a_histogram_counts_every_value_once() {
        let svg = histogram(
            "lengths",
            "tokens",
            &[1, 2, 3, 50, 100],
            10,
            Some((64.0, "cut")),
        );
        let counts: usize = svg
            .split("<title>")
            .skip(2)
            .map(|t| t.split(": ").nth(1).unwrap().split('<').next().unwrap())
            .map(|n| n.parse::<usize>().unwrap())
            .sum();
        assert_eq!(counts, 5);
        assert!(svg.contains(">cut<"));
    }
}
