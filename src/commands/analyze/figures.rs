//! Panels of the analyses' PNGs, for one model or two (the second dashed).

use couplet_report::figure::{Line, OrderMap, Panel};
use couplet_rollout::order::{GLOBAL_K, LOCAL_K};
use couplet_trainer::analysis::{best_temperature, SampleOrder, TemperaturePoint};

/// One model's sweep, labelled; `dashed` for the second model of a comparison.
pub struct Series<'a> {
    pub label: &'a str,
    pub points: &'a [TemperaturePoint],
    pub dashed: bool,
}

/// AR-ness against k, one line per temperature (and model): local@1..9, global@1..4.
pub fn arness_by_k(models: &[Series<'_>], ks: &[usize]) -> Vec<Panel> {
    let panel = |title: &str, y: &str, max_k: usize, pick: fn(&TemperaturePoint) -> &Vec<f64>| {
        let mut lines = Vec::new();
        for m in models {
            for (i, p) in m.points.iter().enumerate() {
                let values = pick(p);
                let points = ks
                    .iter()
                    .filter(|&&k| k <= max_k && k <= values.len())
                    .map(|&k| (k as f64, values[k - 1]))
                    .collect();
                lines.push(Line {
                    label: prefixed(models, m.label, &format!("T = {}", p.temperature)),
                    points,
                    color: i,
                    dashed: m.dashed,
                    marked: Vec::new(),
                });
            }
        }
        Panel {
            title: title.into(),
            x_label: "k".into(),
            y_label: y.into(),
            y_range: Some((0.0, 1.02)),
            integer_x: true,
            lines,
        }
    };
    vec![
        panel("Local AR-ness@k", "local AR-ness@k", LOCAL_K, |p| {
            &p.arness.local
        }),
        panel("Global AR-ness@k", "global AR-ness@k", GLOBAL_K, |p| {
            &p.arness.global
        }),
    ]
}

/// pass@k against temperature for each k in `ks` (best temperature circled), and the
/// same samples' local/global AR-ness@1 against temperature.
pub fn by_temperature(models: &[Series<'_>], ks: &[usize]) -> Vec<Panel> {
    let mut pass = Vec::new();
    let mut arness = Vec::new();
    for m in models {
        for (i, &k) in ks.iter().enumerate() {
            let points: Vec<(f64, f64)> = m
                .points
                .iter()
                .filter_map(|p| p.pass_at(k).map(|v| (p.temperature, v)))
                .collect();
            pass.push(Line {
                label: prefixed(models, m.label, &format!("pass@{k}")),
                points,
                color: i,
                dashed: m.dashed,
                marked: best_temperature(m.points, k).into_iter().collect(),
            });
        }
        let at = |get: fn(&TemperaturePoint) -> f64| -> Vec<(f64, f64)> {
            m.points.iter().map(|p| (p.temperature, get(p))).collect()
        };
        arness.push(Line {
            label: prefixed(models, m.label, "local@1"),
            points: at(|p| p.arness.local.first().copied().unwrap_or(f64::NAN)),
            color: 0,
            dashed: m.dashed,
            marked: Vec::new(),
        });
        arness.push(Line {
            label: prefixed(models, m.label, "global@1"),
            points: at(|p| p.arness.global.first().copied().unwrap_or(f64::NAN)),
            color: 1,
            dashed: m.dashed,
            marked: Vec::new(),
        });
    }
    vec![
        Panel {
            title: "pass@k against temperature (circle: best per k)".into(),
            x_label: "temperature".into(),
            y_label: "pass@k".into(),
            y_range: Some((0.0, 1.02)),
            integer_x: false,
            lines: pass,
        },
        Panel {
            title: "AR-ness@1 of the same samples".into(),
            x_label: "temperature".into(),
            y_label: "AR-ness@1".into(),
            y_range: Some((0.0, 1.02)),
            integer_x: false,
            lines: arness,
        },
    ]
}

/// One model's first-step profile (mean over prompts), labelled.
pub struct Profile<'a> {
    pub label: &'a str,
    pub confidence: &'a [f64],
    pub entropy: &'a [f64],
    pub dashed: bool,
}

/// Mean first-step confidence and entropy against completion position.
pub fn sink(models: &[Profile<'_>]) -> Vec<Panel> {
    let line = |m: &Profile<'_>, values: &[f64], i: usize| Line {
        label: m.label.to_string(),
        points: values
            .iter()
            .enumerate()
            .map(|(j, &v)| (j as f64, v))
            .collect(),
        color: i,
        dashed: m.dashed,
        marked: Vec::new(),
    };
    let confidence = models
        .iter()
        .enumerate()
        .map(|(i, m)| line(m, m.confidence, i))
        .collect();
    let entropy = models
        .iter()
        .enumerate()
        .map(|(i, m)| line(m, m.entropy, i))
        .collect();
    vec![
        Panel {
            title: "First denoising step: confidence by position".into(),
            x_label: "completion position".into(),
            y_label: "max token probability".into(),
            y_range: Some((0.0, 1.02)),
            integer_x: false,
            lines: confidence,
        },
        Panel {
            title: "First denoising step: entropy by position".into(),
            x_label: "completion position".into(),
            y_label: "entropy (nats)".into(),
            y_range: None,
            integer_x: false,
            lines: entropy,
        },
    ]
}

/// Decode-order maps of samples, titled by problem and local AR-ness@1.
pub fn order_maps(label: &str, orders: &[SampleOrder]) -> Vec<OrderMap> {
    orders
        .iter()
        .map(|o| OrderMap {
            title: format!(
                "{label}{} (local@1 {:.2}, global@1 {:.2})",
                o.problem,
                o.arness.local.first().copied().unwrap_or(f64::NAN),
                o.arness.global.first().copied().unwrap_or(f64::NAN)
            ),
            reveal_step: o.reveal_step.clone(),
        })
        .collect()
}

/// `label: what` when several models share the figure, else `what`.
fn prefixed(models: &[Series<'_>], label: &str, what: &str) -> String {
    if models.len() > 1 {
        format!("{label}: {what}")
    } else {
        what.to_string()
    }
}
