//! The order in which training prompts are drawn: one permutation per epoch, a pure
//! function of (seed, epoch), so a resumed run and every rank see the same prompts.
//!
//! Optionally *stratified* by a column of the rows (`data.stratify_by`): each epoch is a
//! sequence of cycles that take one prompt from every group still holding unused rows, so
//! any window of steps sees the groups in (nearly) equal shares. With a few prompts per
//! step drawn from task families of very different difficulty, a plain shuffle makes the
//! mean training reward of a 10-step window swing with the family mix; stratifying removes
//! that swing without changing what is trained on over an epoch.

use couplet_model::random;
use couplet_reward::{load_rows, Row};

use super::TrainError;
use crate::config::TrainConfig;

// Random stream of the plain epoch shuffle (kept from the first release: same orders).
use couplet_model::random::stream::ORDER_SHUFFLE as STREAM_SHUFFLE;
// Random stream of the within-group shuffles.
use couplet_model::random::stream::ORDER_GROUP as STREAM_GROUP;
// Random stream of the group order inside each cycle.
use couplet_model::random::stream::ORDER_CYCLE as STREAM_CYCLE;

/// The training rows and the order they are drawn in.
pub struct TrainingData {
    /// The rows of `data.train`.
    pub rows: Vec<Row>,
    /// Each row's `data.stratify_by` label (`None` without stratification): the groups a
    /// step's reward is also reported by.
    pub labels: Option<Vec<String>>,
    order: PromptOrder,
}

impl TrainingData {
    /// Reads `data.train` and builds its order (`data.stratify_by`).
    pub fn load(config: &TrainConfig) -> Result<Self, TrainError> {
        let path = &config.data.train;
        let (rows, _) =
            load_rows(path, &config.data.load_options()).map_err(|source| TrainError::Data {
                context: "training data",
                source,
            })?;
        if rows.is_empty() {
            return Err(TrainError::Setup(format!(
                "{}: no usable rows",
                path.display()
            )));
        }
        let labels = stratum_labels(config, &rows)?;
        let order = match &labels {
            Some(labels) => PromptOrder::stratified(labels, config.seed),
            None => PromptOrder::shuffled(rows.len(), config.seed),
        };
        Ok(TrainingData {
            rows,
            labels,
            order,
        })
    }

    /// Row indices of round `round` over all ranks (global prompt counter → epoch
    /// permutation).
    pub fn round_rows(&self, round: u64, prompts_per_step: usize) -> Vec<usize> {
        let pps = prompts_per_step as u64;
        (round * pps..(round + 1) * pps)
            .map(|g| self.order.row(g))
            .collect()
    }
}

/// Rank `rank`'s share of a round's rows: consecutive whole prompt groups.
pub fn rank_share(rows: &[usize], rank: usize, world: usize) -> &[usize] {
    let per_rank = rows.len() / world;
    &rows[rank * per_rank..(rank + 1) * per_rank]
}

/// Each row's `data.stratify_by` label; the column must hold a string (or number) in every
/// row, else the error names the file, the row and the column.
fn stratum_labels(config: &TrainConfig, rows: &[Row]) -> Result<Option<Vec<String>>, TrainError> {
    let Some(column) = &config.data.stratify_by else {
        return Ok(None);
    };
    let labels = rows
        .iter()
        .map(|row| {
            let value = match column.as_str() {
                "source" => row.source.clone().map(serde_json::Value::String),
                "id" => Some(serde_json::Value::String(row.id.clone())),
                _ => row.extra.get(column).cloned(),
            };
            match value {
                Some(serde_json::Value::String(s)) => Ok(s),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                _ => Err(TrainError::Setup(format!(
                    "{}: row `{}`: data.stratify_by = \"{column}\" but the row has no \
                     string or number `{column}` column",
                    config.data.train.display(),
                    row.id
                ))),
            }
        })
        .collect::<Result<Vec<String>, TrainError>>()?;
    Ok(Some(labels))
}

/// Per-epoch prompt permutations.
#[derive(Debug, Clone)]
pub struct PromptOrder {
    n: usize,
    seed: u64,
    /// Row indices of each group, in file order; `None` for a plain shuffle.
    groups: Option<Vec<Vec<usize>>>,
}

impl PromptOrder {
    /// A plain shuffle of `n` rows each epoch.
    pub fn shuffled(n: usize, seed: u64) -> Self {
        PromptOrder {
            n,
            seed,
            groups: None,
        }
    }

    /// A shuffle stratified by `labels` (one label per row).
    pub fn stratified<S: AsRef<str>>(labels: &[S], seed: u64) -> Self {
        let mut names: Vec<&str> = Vec::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (row, label) in labels.iter().enumerate() {
            let label = label.as_ref();
            match names.iter().position(|n| *n == label) {
                Some(g) => groups[g].push(row),
                None => {
                    names.push(label);
                    groups.push(vec![row]);
                }
            }
        }
        PromptOrder {
            n: labels.len(),
            seed,
            groups: Some(groups),
        }
    }

    /// Number of rows one epoch covers.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Row indices of epoch `epoch`, every row exactly once.
    pub fn epoch(&self, epoch: u64) -> Vec<usize> {
        let seed = self.seed ^ epoch.wrapping_mul(0x9E37);
        match &self.groups {
            None => permutation(self.n, seed, STREAM_SHUFFLE),
            Some(groups) => stratified_epoch(groups, seed),
        }
    }

    /// The row at global prompt counter `g` (epoch `g / n`, position `g % n`).
    pub fn row(&self, g: u64) -> usize {
        let n = self.n as u64;
        self.epoch(g / n)[(g % n) as usize]
    }
}

/// Cycles of one row per non-exhausted group, groups in a fresh random order each cycle.
fn stratified_epoch(groups: &[Vec<usize>], seed: u64) -> Vec<usize> {
    let shuffled: Vec<Vec<usize>> = groups
        .iter()
        .enumerate()
        .map(|(g, rows)| {
            let stream = STREAM_GROUP ^ ((g as u64) << 16);
            permutation(rows.len(), seed, stream)
                .into_iter()
                .map(|i| rows[i])
                .collect()
        })
        .collect();
    let longest = shuffled.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(groups.iter().map(Vec::len).sum());
    for cycle in 0..longest {
        let open: Vec<usize> = (0..shuffled.len())
            .filter(|&g| cycle < shuffled[g].len())
            .collect();
        let stream = STREAM_CYCLE ^ ((cycle as u64) << 16);
        for i in permutation(open.len(), seed, stream) {
            out.push(shuffled[open[i]][cycle]);
        }
    }
    out
}

/// Fisher–Yates permutation of `0..n` drawn from `(seed, stream)`.
fn permutation(n: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (random::bits(seed, stream, i as u64) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        // Groups a, b (8 rows) and c (7 rows), interleaved in file order.
        (0..23)
            .map(|i| ["a", "b", "c"][i % 3].to_string())
            .collect()
    }

    #[test]
    fn every_epoch_is_a_permutation() {
        for order in [
            PromptOrder::shuffled(23, 5),
            PromptOrder::stratified(&labels(), 5),
        ] {
            for epoch in 0..3 {
                let mut e = order.epoch(epoch);
                e.sort_unstable();
                assert_eq!(e, (0..23).collect::<Vec<_>>());
            }
            assert_ne!(order.epoch(0), order.epoch(1));
        }
    }

    #[test]
    fn stratified_cycles_hold_one_row_per_group() {
        let labels = labels();
        let order = PromptOrder::stratified(&labels, 11);
        let epoch = order.epoch(0);
        // Seven cycles of all three groups, then one of the two larger ones.
        let cycles: Vec<Vec<&str>> = epoch
            .chunks(3)
            .map(|cycle| {
                let mut seen: Vec<&str> = cycle.iter().map(|&r| labels[r].as_str()).collect();
                seen.sort_unstable();
                seen
            })
            .collect();
        for cycle in &cycles[..7] {
            assert_eq!(cycle, &["a", "b", "c"]);
        }
        assert_eq!(cycles[7], ["a", "b"]);
        // Not the same group order in every cycle.
        let firsts: Vec<&str> = epoch.chunks(3).map(|c| labels[c[0]].as_str()).collect();
        assert!(firsts.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn plain_shuffle_is_unchanged_and_row_follows_epochs() {
        let order = PromptOrder::shuffled(10, 3);
        let e0 = order.epoch(0);
        let e1 = order.epoch(1);
        let rows: Vec<usize> = (0..20).map(|g| order.row(g)).collect();
        assert_eq!(rows[..10], e0[..]);
        assert_eq!(rows[10..], e1[..]);
        // The first release's shuffle (stream 0x600, seed ^ epoch * 0x9E37).
        assert_eq!(e1, permutation(10, 3 ^ 0x9E37, 0x600));
    }
}
