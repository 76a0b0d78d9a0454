//! The cache-aware forward passes: a refresh is the plain forward bit for bit, and a cached
//! step over unchanged inputs is the full forward restricted to its queries (up to f32
//! summation order), for shifted and unshifted models, padded and unpadded batches, and
//! rows that compute different columns.

use couplet_testkit as common;

use couplet_model::{random, DreamModel, Init};
use tch::{Device, Kind, Tensor};

const B: i64 = 3;
const L: i64 = 14;

fn model(shifted: bool) -> DreamModel {
    let mut cfg = common::tiny_config(false);
    if !shifted {
        cfg.shift_logits = Some(false);
    }
    let m = random::with_torch_seed(5, || {
        DreamModel::new(&cfg, Device::Cpu, Kind::Float, Init::Random)
    });
    assert_eq!(m.shifted(), shifted);
    assert!(
        cfg.num_kv_heads() < cfg.num_attention_heads,
        "GQA exercised"
    );
    m
}

fn ids() -> Tensor {
    Tensor::from_slice(
        &(0..B * L)
            .map(|i| (i * 37 + 11) % 4000)
            .collect::<Vec<i64>>(),
    )
    .view([B, L])
}

/// Row 0 unpadded, row 1 three pads, row 2 one pad.
fn padding(padded: bool) -> Option<Tensor> {
    padded.then(|| {
        let mut m = vec![1i64; (B * L) as usize];
        for j in 0..3 {
            m[(L + j) as usize] = 0;
        }
        m[(2 * L) as usize] = 0;
        Tensor::from_slice(&m).view([B, L])
    })
}

fn bool_mask(rows: &[&[i64]]) -> Tensor {
    let mut m = vec![false; (B * L) as usize];
    for (b, cols) in rows.iter().enumerate() {
        for &c in *cols {
            m[b * L as usize + c as usize] = true;
        }
    }
    Tensor::from_slice(&m).view([B, L])
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn a_refresh_is_the_plain_forward_bit_for_bit() {
    let _g = tch::no_grad_guard();
    for shifted in [true, false] {
        let m = model(shifted);
        for padded in [false, true] {
            let mask = padding(padded);
            let select = bool_mask(&[&[9, 10, 13], &[8, 12], &[4, 5, 6, 7, 11]]);
            let plain = m.forward(&ids(), mask.as_ref(), Some(&select));
            let (logits, cache) = m.forward_refresh(&ids(), mask.as_ref(), &select);
            assert!(!cache.is_empty() && cache.bytes() > 0);
            assert_eq!(
                max_abs(&plain, &logits),
                0.0,
                "shifted {shifted} padded {padded}"
            );
        }
    }
}

#[test]
fn a_cached_step_over_unchanged_inputs_is_the_full_forward_at_its_queries() {
    let _g = tch::no_grad_guard();
    // Per row: the columns computed (different sets and sizes, one a contiguous suffix)
    // and the positions scored.
    let compute = bool_mask(&[&[8, 9, 10, 11, 12, 13], &[12, 5], &[4, 6, 11]]);
    let select = bool_mask(&[&[9, 10, 13], &[12], &[4, 6, 11]]);
    for shifted in [true, false] {
        let m = model(shifted);
        for padded in [false, true] {
            let mask = padding(padded);
            let full = m.forward(&ids(), mask.as_ref(), Some(&select));
            let (_, mut cache) = m.forward_refresh(&ids(), mask.as_ref(), &select);
            let cached = m.forward_cached(&ids(), &compute, &select, &mut cache);
            assert_eq!(cached.size(), full.size());
            // Logits are O(10) for this model; reductions of length H = 64 (and L keys),
            // over 2 layers and the head.
            let magnitude = full.abs().max().double_value(&[]);
            let tol = common::f32_order_tolerance(magnitude, 64, 8);
            let err = max_abs(&cached, &full);
            assert!(
                err <= tol,
                "shifted {shifted} padded {padded}: {err} > {tol}"
            );
            // Nothing changed, so the rewritten keys and values equal the old ones: a
            // second step scores the same again.
            let again = m.forward_cached(&ids(), &compute, &select, &mut cache);
            assert!(max_abs(&again, &full) <= tol);
        }
    }
}

#[test]
fn a_cached_step_sees_the_tokens_it_recomputes_and_not_the_others() {
    let _g = tch::no_grad_guard();
    let m = model(true);
    let select = bool_mask(&[&[12], &[12], &[12]]);
    let (_, mut cache) = m.forward_refresh(&ids(), None, &select);
    // Change column 5 of every row. Row 0 recomputes it: its new key is what column 11
    // (scoring 12) attends to, so row 0's logits follow the new token exactly as far as
    // that one key goes; rows 1 and 2 do not recompute it and keep the old key.
    let changed = ids().index_fill(1, &Tensor::from_slice(&[5i64]), 3999);
    let compute = bool_mask(&[&[5, 11], &[11], &[11]]);
    let cached = m.forward_cached(&changed, &compute, &select, &mut cache);
    let old = m.forward(&ids(), None, Some(&select));
    let tol = common::f32_order_tolerance(old.abs().max().double_value(&[]), 64, 8);
    // Rounding alone moves logits by at most `tol`; the new key moves row 0's by about
    // 2.3 (seeded model, 3200 × tol), so 100 × tol separates the two with room to spare.
    assert!(
        max_abs(&cached.get(0), &old.get(0)) > 100.0 * tol,
        "row 0 sees the new token"
    );
    for row in [1, 2] {
        assert!(
            max_abs(&cached.get(row), &old.get(row)) <= tol,
            "row {row} keeps the old key"
        );
    }
}
