//! The soak's PNG: one panel per metric, one line per node, grey verticals at the thirds the
//! plateau verdict compares.
//!
//! Text goes through `ab_glyph` with a TrueType font found at run time (no fontconfig or
//! freetype at build time). Without any font the plot is drawn all the same, without
//! captions, tick labels or legend: panels are then in [`Metric::ALL`] order, left to right
//! and top to bottom, and lines in node order with the colours of [`color`] (SOAK.md says so).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::sample::{Metric, Sample};

/// Width and height of the PNG.
const SIZE: (u32, u32) = (1600, 1750);
/// Fonts tried first, then any `.ttf` under [`FONT_DIRS`].
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
const FONT_DIRS: &[&str] = &["/usr/share/fonts", "/usr/local/share/fonts"];
/// Font family name the font is registered under.
const FAMILY: &str = "sans-serif";

/// Line colour of the `i`-th node (the relay is first).
pub fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 6] = [
        RGBColor(0, 0, 0),       // relay: black
        RGBColor(214, 39, 40),   // node0: red
        RGBColor(31, 119, 180),  // node1: blue
        RGBColor(44, 160, 44),   // node2: green
        RGBColor(255, 127, 14),  // node3: orange
        RGBColor(148, 103, 189), // node4: purple
    ];
    COLORS[i % COLORS.len()]
}

/// Draw `samples` of `nodes` (in legend order) to `path`. Returns the font used, `None` if the
/// plot has no text.
pub fn render(
    path: &Path,
    samples: &[Sample],
    nodes: &[String],
    title: &str,
) -> Result<Option<PathBuf>> {
    let font = register_font();
    let text = font.is_some();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let body = if text {
        root.titled(title, (FAMILY, 26)).map_err(err)?
    } else {
        root.clone()
    };
    let end = samples.iter().map(|s| s.time_s).fold(1.0, f64::max);
    for (panel, metric) in body.split_evenly((4, 2)).iter().zip(Metric::ALL) {
        let y_max = samples
            .iter()
            .map(|s| metric.plotted(s))
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1;
        let mut builder = ChartBuilder::on(panel);
        builder.margin(12);
        if text {
            builder
                .caption(metric.title(), (FAMILY, 20))
                .x_label_area_size(40)
                .y_label_area_size(80);
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..end, 0.0..y_max)
            .map_err(err)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("seconds of churn")
                .label_style((FAMILY, 14))
                .y_label_formatter(&|v| short(*v));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(err)?;
        for third in [end / 3.0, 2.0 * end / 3.0] {
            chart
                .draw_series(LineSeries::new(
                    [(third, 0.0), (third, y_max)],
                    RGBColor(170, 170, 170).stroke_width(1),
                ))
                .map_err(err)?;
        }
        for (i, node) in nodes.iter().enumerate() {
            let c = color(i);
            let points = samples
                .iter()
                .filter(|s| &s.node == node)
                .map(|s| (s.time_s, metric.plotted(s)));
            let series = chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))
                .map_err(err)?;
            if text {
                series.label(node.as_str()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(font)
}

/// `12345678` as `12.3M`, for tick labels.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Find a TrueType font and register it as [`FAMILY`] (once per process: plotters keeps it
/// for the process's lifetime, hence the leak).
fn register_font() -> Option<PathBuf> {
    static FONT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let candidates = FONTS
            .iter()
            .map(PathBuf::from)
            .chain(FONT_DIRS.iter().flat_map(|d| ttf_files(Path::new(d), 4)));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                return Some(path);
            }
        }
        None
    })
    .clone()
}

/// `.ttf` files under `dir`, at most `depth` levels down, sorted.
fn ttf_files(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && depth > 0 {
            out.extend(ttf_files(&p, depth - 1));
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
    out
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.png");
        let nodes = vec!["relay".to_owned(), "node0".to_owned()];
        let samples: Vec<Sample> = (0..20)
            .flat_map(|i| {
                nodes.iter().map(move |n| Sample {
                    time_s: i as f64 * 5.0,
                    node: n.clone(),
                    file_bytes: 3_000_000 + i * 1000,
                    history_rows: 500 * i,
                    tombstones: i % 5 * 10,
                    rss_kb: 20_000,
                    live_records: 6000,
                    feed_rows: 6000 + i,
                    wal_bytes: 4096,
                })
            })
            .collect();
        render(&path, &samples, &nodes, "test").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short(12_345_678.0), "12.3M");
        assert_eq!(short(45_000.0), "45k");
        assert_eq!(short(512.0), "512");
        assert_eq!(short(0.5), "0.50");
    }
}
