//! Figures of the decoding analyses (`couplet analyze`): panels of lines over a real x axis
//! (AR-ness against k, pass@k against temperature, confidence against position) and
//! decode-order heatmaps. The analyses compute the numbers; this module only draws them.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::plot::{plot_err, register_font, COLORS};
use crate::ReportError;

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend text.
    pub label: String,
    /// (x, y) points, drawn in order; non-finite y values are skipped.
    pub points: Vec<(f64, f64)>,
    /// Colour index into the shared palette (the same index = the same colour in every
    /// panel, so a temperature or a model keeps its colour).
    pub color: usize,
    /// Dashed (e.g. the second model of a comparison).
    pub dashed: bool,
    /// Points circled (e.g. the best temperature).
    pub marked: Vec<(f64, f64)>,
}

/// One chart: axes, title and lines.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Caption above the chart.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Y range; `None` = from the data (padded).
    pub y_range: Option<(f64, f64)>,
    /// Whole-number x ticks (e.g. k of AR-ness@k) instead of plotters' decimal ones.
    pub integer_x: bool,
    /// The lines.
    pub lines: Vec<Line>,
}

/// Draws `panels` side by side into one PNG.
pub fn panels(panels: &[Panel], path: &Path) -> Result<(), ReportError> {
    register_font()?;
    let e = plot_err(path);
    let width = 560 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_panel(panel, area).map_err(&e)?;
    }
    root.present().map_err(|x| e(x.to_string()))
}

/// The data's x and y ranges (y padded by 5 %, or `panel.y_range`).
fn ranges(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    let points = || {
        panel
            .lines
            .iter()
            .flat_map(|l| l.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        return ((0.0, 1.0), panel.y_range.unwrap_or((0.0, 1.0)));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y = panel.y_range.unwrap_or_else(|| {
        let pad = ((y1 - y0) * 0.05).max(1e-3);
        (y0 - pad, y1 + pad)
    });
    ((x0, x1), y)
}

fn draw_panel(panel: &Panel, area: &DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String> {
    let ((x0, x1), (y0, y1)) = ranges(panel);
    // Headroom above the data for the legend (about one line's height per entry), so the
    // legend never hides a point.
    let headroom = (0.08 + 0.055 * panel.lines.len() as f64).min(0.8);
    let y1 = y1 + (y1 - y0) * headroom;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|x| x.to_string())?;
    let mut mesh = chart.configure_mesh();
    let whole = |x: &f64| format!("{}", x.round());
    if panel.integer_x {
        mesh.x_labels((x1 - x0).round() as usize + 1)
            .x_label_formatter(&whole);
    }
    mesh.x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|x| x.to_string())?;
    for line in &panel.lines {
        let color = COLORS[line.color % COLORS.len()];
        let style = color.stroke_width(2);
        let points: Vec<(f64, f64)> = line
            .points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite())
            .collect();
        let drawn = if line.dashed {
            chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))
        } else {
            chart.draw_series(LineSeries::new(points.clone(), style))
        }
        .map_err(|x| x.to_string())?;
        let dashed = line.dashed;
        drawn.label(line.label.as_str()).legend(move |(x, y)| {
            let end = if dashed { x + 8 } else { x + 18 };
            PathElement::new(vec![(x, y), (end, y)], color.stroke_width(2))
        });
        if points.len() <= 16 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled())))
                .map_err(|x| x.to_string())?;
        }
        chart
            .draw_series(
                line.marked
                    .iter()
                    .map(|&p| Circle::new(p, 7, color.stroke_width(2))),
            )
            .map_err(|x| x.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|x| x.to_string())
}

/// One decode order to draw: which step revealed each completion position (−1 = never).
#[derive(Debug, Clone)]
pub struct OrderMap {
    /// Caption (e.g. the problem and sample).
    pub title: String,
    /// Reveal step per completion position.
    pub reveal_step: Vec<i64>,
}

/// Decode-order heatmaps, one per sample side by side: position (x) × denoising step (y,
/// first step at the top); a cell is filled where that step revealed that position,
/// coloured from early (dark) to late (light), so left-to-right decoding is a diagonal.
pub fn order_maps(maps: &[OrderMap], path: &Path) -> Result<(), ReportError> {
    register_font()?;
    let e = plot_err(path);
    let width = 420 * maps.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let areas = root.split_evenly((1, maps.len().max(1)));
    for (map, area) in maps.iter().zip(&areas) {
        draw_order_map(map, area).map_err(&e)?;
    }
    root.present().map_err(|x| e(x.to_string()))
}

fn draw_order_map(
    map: &OrderMap,
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
) -> Result<(), String> {
    let positions = map.reveal_step.len().max(1) as i64;
    let steps = map.reveal_step.iter().copied().max().unwrap_or(0).max(0) + 1;
    let mut chart = ChartBuilder::on(area)
        .caption(&map.title, ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0i64..positions, steps..0i64)
        .map_err(|x| x.to_string())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("completion position")
        .y_desc("denoising step")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|x| x.to_string())?;
    let cells = map
        .reveal_step
        .iter()
        .enumerate()
        .filter(|(_, &s)| s >= 0)
        .map(|(p, &s)| {
            let shade = s as f64 / steps.max(1) as f64;
            let color = ramp(shade);
            Rectangle::new([(p as i64, s), (p as i64 + 1, s + 1)], color.filled())
        });
    chart.draw_series(cells).map_err(|x| x.to_string())?;
    Ok(())
}

/// Viridis-like ramp without the colormap feature: dark blue (0) → teal → yellow (1).
fn ramp(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let stops = [
        (68.0, 1.0, 84.0),
        (33.0, 145.0, 140.0),
        (253.0, 231.0, 37.0),
    ];
    let (a, b, u) = if t < 0.5 {
        (stops[0], stops[1], t * 2.0)
    } else {
        (stops[1], stops[2], t * 2.0 - 1.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_font() -> bool {
        register_font().is_ok()
    }

    #[test]
    fn panels_and_order_maps_write_pngs() {
        if !have_font() {
            eprintln!("no font: skipped (scripts/setup.sh installs fonts-dejavu-core)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let panel = Panel {
            title: "t".into(),
            x_label: "k".into(),
            y_label: "v".into(),
            y_range: Some((0.0, 1.0)),
            integer_x: true,
            lines: vec![Line {
                label: "a".into(),
                points: vec![(1.0, 0.5), (2.0, f64::NAN), (3.0, 0.7)],
                color: 0,
                dashed: true,
                marked: vec![(3.0, 0.7)],
            }],
        };
        let png = dir.path().join("p.png");
        panels(&[panel.clone(), panel], &png).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        let map = OrderMap {
            title: "m".into(),
            reveal_step: vec![0, 2, 1, -1],
        };
        let png = dir.path().join("o.png");
        order_maps(&[map], &png).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    }

    #[test]
    fn ranges_pad_the_data_and_survive_empty_panels() {
        let mut panel = Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            y_range: None,
            integer_x: false,
            lines: Vec::new(),
        };
        assert_eq!(ranges(&panel), ((0.0, 1.0), (0.0, 1.0)));
        panel.lines.push(Line {
            label: String::new(),
            points: vec![(0.2, 0.0), (1.2, 1.0)],
            color: 0,
            dashed: false,
            marked: Vec::new(),
        });
        let ((x0, x1), (y0, y1)) = ranges(&panel);
        assert_eq!((x0, x1), (0.2, 1.2));
        assert!((y0 + 0.05).abs() < 1e-12 && (y1 - 1.05).abs() < 1e-12);
    }
}
