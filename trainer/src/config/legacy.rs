//! The `[estimator]` and `[objective]` sections of configs written before the algorithm
//! became a value: rejected at load with the exact replacement to write, so an old config
//! never runs with silently different settings.

use super::ConfigError;

/// Where each old key went: (old section, old key, new section, new key). The estimator's
/// `kind` becomes `algorithm.name`; every other old key keeps its value.
const MOVED: [(&str, &str, &str, &str); 17] = [
    ("estimator", "kind", "algorithm", "name"),
    ("estimator", "pairs", "algorithm", "pairs"),
    (
        "estimator",
        "include_full_mask",
        "algorithm",
        "include_full_mask",
    ),
    ("estimator", "p_mask_prompt", "algorithm", "p_mask_prompt"),
    ("estimator", "random_masking", "algorithm", "random_masking"),
    (
        "estimator",
        "logits_chunk_rows",
        "model",
        "logits_chunk_rows",
    ),
    ("objective", "beta", "algorithm", "beta"),
    ("objective", "epsilon_low", "algorithm", "epsilon_low"),
    ("objective", "epsilon_high", "algorithm", "epsilon_high"),
    ("objective", "baseline", "algorithm", "baseline"),
    ("objective", "scale_rewards", "algorithm", "scale_rewards"),
    ("objective", "num_iterations", "schedule", "num_iterations"),
    ("objective", "sync_ref_model", "reference", "sync"),
    (
        "objective",
        "ref_model_sync_steps",
        "reference",
        "sync_steps",
    ),
    (
        "objective",
        "ref_model_mixup_alpha",
        "reference",
        "mixup_alpha",
    ),
    ("objective", "reference_dtype", "reference", "dtype"),
    ("objective", "reference_device", "reference", "device"),
];

/// An error naming the replacement when `table` (a whole config, overrides applied) has
/// an `[estimator]` or `[objective]` section.
pub fn reject_old_sections(table: &toml::Table, origin: &str) -> Result<(), ConfigError> {
    let old: Vec<&str> = ["estimator", "objective"]
        .into_iter()
        .filter(|s| table.contains_key(*s))
        .collect();
    if old.is_empty() {
        return Ok(());
    }
    let mut lines = Vec::new();
    let mut unknown = Vec::new();
    for section in &old {
        let Some(toml::Value::Table(keys)) = table.get(*section) else {
            continue;
        };
        for (key, value) in keys {
            let to = MOVED.iter().find(|(s, k, _, _)| s == section && k == key);
            match to {
                Some((_, _, new_section, new_key)) => {
                    lines.push(format!("{new_section}.{new_key} = {value}"))
                }
                None => unknown.push(format!("{section}.{key}")),
            }
        }
    }
    let mut message = format!(
        "[{}] no longer exist{}: the method and its knobs live in [algorithm] (`name` picks it: {}), the reference's settings in [reference], μ in schedule.num_iterations and logits_chunk_rows in [model] (configs/README.md). Write instead:\n  {}",
        old.join("] and ["),
        if old.len() == 1 { "s" } else { "" },
        crate::algorithm::NAMES.join(", "),
        lines.join("\n  ")
    );
    if !unknown.is_empty() {
        message.push_str(&format!("\n(not old keys either: {})", unknown.join(", ")));
    }
    Err(ConfigError::Parse {
        origin: origin.to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_sections_fail_with_their_replacement() {
        let old = "[estimator]\nkind = \"d1\"\np_mask_prompt = 0.3\n[objective]\nbeta = 0.0\nnum_iterations = 1\nsync_ref_model = false\n";
        let table: toml::Table = old.parse().unwrap();
        let err = reject_old_sections(&table, "old.toml")
            .unwrap_err()
            .to_string();
        for want in [
            "old.toml",
            "algorithm.name = \"d1\"",
            "algorithm.p_mask_prompt = 0.3",
            "algorithm.beta = 0.0",
            "schedule.num_iterations = 1",
            "reference.sync = false",
        ] {
            assert!(err.contains(want), "{want} missing from: {err}");
        }
        let fine: toml::Table = "[algorithm]\nname = \"d1\"\n".parse().unwrap();
        assert!(reject_old_sections(&fine, "new.toml").is_ok());
    }
}
