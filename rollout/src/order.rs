//! Decode-order telemetry (SPEC 2.4): in which order were completion positions revealed,
//! and how autoregressive was that order (DiffuCoder, appendix A.2; exact definitions in
//! docs/guide/analysis.md).
//!
//! A decode order is the sequence p_1, …, p_T of completion positions (0 = first completion
//! token) in the order they were revealed. Conventions:
//! - the prompt counts as revealed before the first step, as positions −1, −2, … (so
//!   strict left-to-right decoding scores 1.0 on every measure, from the first step on);
//! - positions revealed at the same step are listed left to right (with one token per
//!   step, the paper's protocol, this never applies);
//! - every revealed position of the completion window counts, end-of-text padding too
//!   (a diffusion decoder reveals it like any token); positions never revealed (a decoder
//!   that stopped early) are left out of the order and never count as revealed.

use serde::Serialize;

/// Local AR-ness is reported for k = 1..=LOCAL_K, global for k = 1..=GLOBAL_K (the paper's).
pub const LOCAL_K: usize = 9;
/// Largest k of global AR-ness.
pub const GLOBAL_K: usize = 4;

/// The order `p_1, …, p_T` in which positions were revealed, from their reveal steps.
/// Positions never revealed (step < 0) are left out.
pub fn reveal_order(reveal_step: &[i64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..reveal_step.len())
        .filter(|&j| reveal_step[j] >= 0)
        .collect();
    order.sort_by_key(|&j| (reveal_step[j], j));
    order
}

/// Local AR-ness@k: share of reveals p_t that, with the k reveals just before them, form a
/// strictly consecutive left-to-right run: p_{t−i} = p_t − i for i = 1..k ("next token"
/// pattern; the prompt stands in for reveals before the first).
pub fn local_arness(order: &[usize], k: usize) -> f64 {
    if order.is_empty() || k == 0 {
        return f64::NAN;
    }
    // Reveal sequence with the prompt in front: …, −2, −1, p_1, p_2, …
    let prev = |t: usize, back: usize| -> i64 {
        if back <= t {
            order[t - back] as i64
        } else {
            -((back - t) as i64)
        }
    };
    let hits = (0..order.len())
        .filter(|&t| {
            let p = order[t] as i64;
            (1..=k).all(|back| prev(t, back) == p - back as i64)
        })
        .count();
    hits as f64 / order.len() as f64
}

/// Global AR-ness@k: share of reveals that pick one of the k left-most positions still
/// masked just before that reveal ("left first" pattern).
pub fn global_arness(order: &[usize], k: usize) -> f64 {
    if order.is_empty() || k == 0 {
        return f64::NAN;
    }
    let len = order.iter().max().map_or(0, |&m| m + 1);
    let mut masked = vec![true; len];
    let mut hits = 0;
    for &p in order {
        let rank = masked[..p].iter().filter(|&&m| m).count();
        if rank < k {
            hits += 1;
        }
        masked[p] = false;
    }
    hits as f64 / order.len() as f64
}

/// AR-ness@1..k of one sequence, or averaged over many.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, Default)]
pub struct ArNess {
    /// Local AR-ness@k for k = 1..=9.
    pub local: Vec<f64>,
    /// Global AR-ness@k for k = 1..=4.
    pub global: Vec<f64>,
}

impl ArNess {
    /// AR-ness of one decode order.
    pub fn of_order(order: &[usize]) -> Self {
        ArNess {
            local: (1..=LOCAL_K).map(|k| local_arness(order, k)).collect(),
            global: (1..=GLOBAL_K).map(|k| global_arness(order, k)).collect(),
        }
    }

    /// Mean over sequences (NaN entries, from empty orders, skipped).
    pub fn mean<'a>(items: impl IntoIterator<Item = &'a ArNess>) -> ArNess {
        let items: Vec<&ArNess> = items.into_iter().collect();
        let avg = |get: &dyn Fn(&ArNess) -> &Vec<f64>, n: usize| -> Vec<f64> {
            (0..n)
                .map(|k| {
                    let vals: Vec<f64> = items
                        .iter()
                        .map(|a| get(a)[k])
                        .filter(|v| !v.is_nan())
                        .collect();
                    if vals.is_empty() {
                        f64::NAN
                    } else {
                        vals.iter().sum::<f64>() / vals.len() as f64
                    }
                })
                .collect()
        };
        ArNess {
            local: avg(&|a| &a.local, LOCAL_K),
            global: avg(&|a| &a.global, GLOBAL_K),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_to_right_is_fully_autoregressive() {
        let order: Vec<usize> = (0..16).collect();
        let a = ArNess::of_order(&order);
        assert!(a.local.iter().all(|&v| v == 1.0), "{a:?}");
        assert!(a.global.iter().all(|&v| v == 1.0), "{a:?}");
    }

    #[test]
    fn right_to_left_by_hand() {
        // K = 8 revealed 7, 6, …, 0. Local: no reveal has its left neighbours before it → 0.
        // Global@k: reveal t picks position 8 − t, among the k left-most masked {0..k−1}
        // only for the last k reveals → k / 8.
        let order: Vec<usize> = (0..8).rev().collect();
        let a = ArNess::of_order(&order);
        assert!(a.local.iter().all(|&v| v == 0.0), "{a:?}");
        for (i, &g) in a.global.iter().enumerate() {
            assert_eq!(g, (i + 1) as f64 / 8.0);
        }
    }

    #[test]
    fn mixed_order_by_hand() {
        // Order 1, 0, 2, 3 (prompt = …, −2, −1 in front):
        // local@1: t=0 p=1: pred −1, want 0 → miss. t=1 p=0: pred 1, want −1 → miss.
        //          t=2 p=2: pred 0, want 1 → miss. t=3 p=3: pred 2 → hit. → 1/4.
        // local@2 needs the run in order: t=2 p=2: preds (p_1, p_0) = (0, 1), want (1, 0)
        //          → miss (the same set in the wrong order is not a left-to-right run);
        //          t=3 p=3: preds (2, 0), want (2, 1) → miss; t=0, t=1 miss. → 0.
        // global@1: t=0 p=1 rank 1 → miss; t=1 p=0 rank 0 hit; t=2 p=2 hit; t=3 hit → 3/4.
        // global@2: all ranks < 2 → 1.
        let order = [1, 0, 2, 3];
        assert_eq!(local_arness(&order, 1), 0.25);
        assert_eq!(local_arness(&order, 2), 0.0);
        assert_eq!(global_arness(&order, 1), 0.75);
        assert_eq!(global_arness(&order, 2), 1.0);
    }

    #[test]
    fn the_first_k_steps_continue_the_prompt() {
        // Order 0, 1, 5, 6, 7, 2, 3, 4 (K = 8). With the prompt as …, −2, −1:
        // t=0 p=0: run (−k..−1, 0) → hit for every k. t=1 p=1: (…, −1, 0, 1) → hit for all k.
        // t=2 p=5: pred 1 ≠ 4 → miss. t=3 p=6: pred 5 → hit@1; @2 needs 4 → miss.
        // t=4 p=7: (5, 6) → hit@1, hit@2; @3 needs 4 → miss.
        // t=5 p=2: pred 7 → miss. t=6 p=3: pred 2 → hit@1; @2 needs (2, 1), has (2, 7) → miss.
        // t=7 p=4: (3, 2) → hit@1, @2; @3 needs 1, has 7 → miss.
        let order = [0, 1, 5, 6, 7, 2, 3, 4];
        let hits = |k| local_arness(&order, k) * 8.0;
        assert_eq!(hits(1), 6.0); // t = 0, 1, 3, 4, 6, 7
        assert_eq!(hits(2), 4.0); // t = 0, 1, 4, 7
        assert_eq!(hits(3), 2.0); // t = 0, 1
        assert_eq!(hits(9), 2.0);
        // Global@1: masked-left-most picks at t = 0, 1, 5, 6, 7; t=2 p=5 has 2, 3, 4 masked
        // to its left (rank 3): global@k hits for k ≥ 4; t=3 p=6 rank 3, t=4 p=7 rank 3.
        assert_eq!(global_arness(&order, 1), 5.0 / 8.0);
        assert_eq!(global_arness(&order, 3), 5.0 / 8.0);
        assert_eq!(global_arness(&order, 4), 1.0);
    }

    #[test]
    fn a_step_that_reveals_several_positions_lists_them_left_to_right() {
        // Steps: {2, 3} at step 0, {0, 1} at step 1 → order 2, 3, 0, 1.
        let order = reveal_order(&[1, 1, 0, 0]);
        assert_eq!(order, vec![2, 3, 0, 1]);
        // local@1: t=1 (3 after 2) and t=3 (1 after 0) hit; t=0 (2 after −1), t=2 (0 after 3)
        // miss. local@2: t=3 needs (0, −1)... has (0, 3) → miss; none hit.
        assert_eq!(local_arness(&order, 1), 0.5);
        assert_eq!(local_arness(&order, 2), 0.0);
    }

    #[test]
    fn positions_never_revealed_are_left_out() {
        // A decoder that stopped after revealing 0, 1 (end of text at 1): positions 2, 3
        // never revealed (step −1) do not count, so the order is fully left to right.
        let order = reveal_order(&[0, 1, -1, -1]);
        assert_eq!(order, vec![0, 1]);
        let a = ArNess::of_order(&order);
        assert!(a.local.iter().chain(&a.global).all(|&v| v == 1.0), "{a:?}");
        // An empty order has no AR-ness (NaN), and means skip it.
        assert!(local_arness(&[], 1).is_nan());
        let mean = ArNess::mean([&ArNess::of_order(&[]), &ArNess::of_order(&[1, 0])]);
        assert_eq!(mean.local[0], 0.0);
        assert_eq!(mean.global[0], 0.5);
    }

    #[test]
    fn reveal_order_sorts_by_step_then_position() {
        assert_eq!(reveal_order(&[2, 0, 0, 1, -1]), vec![1, 2, 3, 0]);
    }
}
