//! The one look of every progress bar (rollouts, training steps, evaluation problems).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` units named `unit` ("steps", "problems"), prefixed with `prefix`, or a
/// hidden one when `visible` is false (other ranks, `--quiet` paths).
pub fn progress_bar(len: u64, prefix: &str, unit: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template =
        format!("{{prefix}} {{bar:30}} {{pos}}/{{len}} {unit} [{{elapsed_precise}} < {{eta_precise}}] {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
