//! PNG plots with `plotters` (bitmap backend; text through `ab_glyph` with a system TTF,
//! DejaVu Sans by default, so no font library is linked).

use std::path::Path;

use plotters::coord::types::{RangedCoordf64, RangedCoordu64};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::{ReportError, RunData, Variant};

/// Where a sans-serif TTF is looked for (`COUPLET_FONT` first).
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

pub(crate) const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
];

/// Registers the font plotters draws text with (once per process).
pub fn register_font() -> Result<(), ReportError> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let env = std::env::var("COUPLET_FONT").ok();
        let path = env
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES.iter().copied())
            .find(|p| Path::new(p).is_file())
            .ok_or_else(|| {
                format!(
                    "no TrueType font for the plots: install fonts-dejavu-core (scripts/setup.sh does) or set COUPLET_FONT to a .ttf file; looked in {}",
                    FONT_CANDIDATES.join(", ")
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a usable TrueType font"))
    })
    .clone()
    .map_err(ReportError::Font)
}

pub(crate) fn plot_err(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Plot {
        path: path.to_path_buf(),
        message,
    }
}

/// (step, mean, min, max) over seeds.
type BandPoint = (u64, f64, f64, f64);

/// Per step: (mean, min, max) over the runs that logged that step.
fn band(series: &[Vec<(u64, f64)>]) -> Vec<BandPoint> {
    let mut steps: Vec<u64> = series.iter().flatten().map(|(s, _)| *s).collect();
    steps.sort_unstable();
    steps.dedup();
    steps
        .into_iter()
        .filter_map(|s| {
            let v: Vec<f64> = series
                .iter()
                .filter_map(|r| r.iter().find(|(x, _)| *x == s).map(|(_, v)| *v))
                .filter(|v| v.is_finite())
                .collect();
            (!v.is_empty()).then(|| {
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (s, mean, lo, hi)
            })
        })
        .collect()
}

/// Trailing moving average over `window` points (1 = none), per run.
fn smooth(points: &[(u64, f64)], window: usize) -> Vec<(u64, f64)> {
    (0..points.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window.max(1));
            let w = &points[from..=i];
            (
                points[i].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect()
}

type Chart<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordu64, RangedCoordf64>>;

/// Draws the legend and writes the PNG.
fn finish(
    chart: &mut Chart<'_>,
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    path: &Path,
) -> Result<(), ReportError> {
    let e = plot_err(path);
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Series with at most this many points are drawn with a marker per point.
const SPARSE_POINTS: usize = 12;

/// One line (mean over seeds) and a min–max band per variant.
pub fn curves(
    variants: &[Variant],
    path: &Path,
    title: &str,
    y_label: &str,
    series: impl Fn(&RunData) -> Vec<(u64, f64)>,
    window: usize,
) -> Result<(), ReportError> {
    let e = plot_err(path);
    let bands: Vec<(String, Vec<BandPoint>)> = variants
        .iter()
        .map(|v| {
            let runs: Vec<Vec<(u64, f64)>> =
                v.runs.iter().map(|r| smooth(&series(r), window)).collect();
            (v.label.clone(), band(&runs))
        })
        .collect();
    let all = bands.iter().flat_map(|(_, b)| b.iter());
    let (mut x_max, mut y_min, mut y_max) = (1u64, f64::INFINITY, f64::NEG_INFINITY);
    for &(s, _, lo, hi) in all {
        x_max = x_max.max(s);
        y_min = y_min.min(lo);
        y_max = y_max.max(hi);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..x_max, (y_min - pad)..(y_max + pad))
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, (label, b)) in bands.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if b.len() > 1 {
            let mut polygon: Vec<(u64, f64)> = b.iter().map(|p| (p.0, p.3)).collect();
            polygon.extend(b.iter().rev().map(|p| (p.0, p.2)));
            chart
                .draw_series(std::iter::once(Polygon::new(polygon, color.mix(0.15))))
                .map_err(|x| e(x.to_string()))?;
        }
        chart
            .draw_series(LineSeries::new(
                b.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))
            .map_err(|x| e(x.to_string()))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        // Sparse series (evaluations) get a marker per measured point, so a line between
        // two evaluations is not read as a measured curve.
        if b.len() <= SPARSE_POINTS {
            chart
                .draw_series(b.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled())))
                .map_err(|x| e(x.to_string()))?;
        }
    }
    finish(&mut chart, &root, path)
}

/// Local AR-ness@k (k = 1..9) of the validation samples at the first (dashed) and last
/// (solid) evaluation, mean over seeds, per variant.
pub fn arness(variants: &[Variant], path: &Path) -> Result<(), ReportError> {
    let e = plot_err(path);
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Local AR-ness@k of validation samples: before (dashed) and after (solid) training",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1u64..9u64, 0f64..1.05f64)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("k")
        .y_desc("local AR-ness@k")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let mean_curve = |v: &Variant, last: bool| -> Vec<(u64, f64)> {
        let curves: Vec<&Vec<f64>> = v
            .runs
            .iter()
            .filter_map(|r| {
                if last {
                    r.evals.last()
                } else {
                    r.evals.first()
                }
            })
            .map(|ev| &ev.arness_local)
            .filter(|c| !c.is_empty())
            .collect();
        let k = curves.iter().map(|c| c.len()).min().unwrap_or(0);
        (0..k)
            .map(|i| {
                let m = curves.iter().map(|c| c[i]).sum::<f64>() / curves.len() as f64;
                (i as u64 + 1, m)
            })
            .collect()
    };
    for (i, v) in variants.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let before = mean_curve(v, false);
        let after = mean_curve(v, true);
        chart
            .draw_series(DashedLineSeries::new(before, 6, 4, color.stroke_width(1)))
            .map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(LineSeries::new(after, color.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(v.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    finish(&mut chart, &root, path)
}
