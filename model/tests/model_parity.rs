//! The Dream forward pass against an independent plain-PyTorch implementation (SPEC 1).

use couplet_testkit as common;

use couplet_model::{load_model, LoadOptions};
use serde_json::json;
use tch::{Kind, Tensor};

fn parity(tied: bool, padded: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), tied, 3);
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    assert!(
        model.config().num_kv_heads() < model.config().num_attention_heads,
        "GQA must be exercised"
    );

    let ids: Vec<Vec<i64>> = vec![
        vec![11, 250, 17, 4001, 93, 8, 8, 1200, 77, 4093, 5, 61],
        vec![40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51],
    ];
    let mask: Vec<Vec<i64>> = if padded {
        vec![vec![0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], vec![1; 12]]
    } else {
        vec![vec![1; 12], vec![1; 12]]
    };
    let request = tmp.path().join("request.json");
    let mask_json = if padded {
        json!(mask)
    } else {
        serde_json::Value::Null
    };
    std::fs::write(
        &request,
        json!({ "ids": ids, "attention_mask": mask_json }).to_string(),
    )
    .unwrap();
    let out = tmp.path().join("logits.bin");
    common::reference(&[
        "forward",
        dir.to_str().unwrap(),
        request.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let expected = common::read_f32(&out);

    let ids_t = Tensor::from_slice2(&ids);
    let mask_t = Tensor::from_slice2(&mask);
    let logits = model.forward_logits(&ids_t, padded.then_some(&mask_t));
    let (b, l, v) = logits.size3().unwrap();
    assert_eq!(expected.len() as i64, b * l * v);
    let got = Vec::<f32>::try_from(&logits.reshape([-1])).unwrap();
    let mut max_diff = 0f32;
    for (bi, row) in mask.iter().enumerate() {
        for (li, &real) in row.iter().enumerate() {
            if real == 0 {
                continue; // pad rows are never read
            }
            let base = (bi * l as usize + li) * v as usize;
            for vi in 0..v as usize {
                max_diff = max_diff.max((got[base + vi] - expected[base + vi]).abs());
            }
        }
    }
    // Two implementations, two summation orders: the longest chained reduction is the
    // MLP's (intermediate_size terms), once per layer plus the lm_head.
    let magnitude = expected.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let tol = common::forward_tolerance(magnitude, model.config());
    eprintln!("tied={tied} padded={padded}: max |Δlogit| = {max_diff:e} (tolerance {tol:e})");
    assert!(
        f64::from(max_diff) <= tol,
        "max abs diff {max_diff} > tolerance {tol}"
    );
}

#[test]
fn forward_matches_pytorch_untied_unpadded() {
    parity(false, false);
}

#[test]
fn forward_matches_pytorch_untied_left_padded() {
    parity(false, true);
}

#[test]
fn forward_matches_pytorch_tied_left_padded() {
    parity(true, true);
}

#[test]
fn forward_matches_pytorch_tied_unpadded() {
    parity(true, false);
}

#[test]
fn left_padding_does_not_change_real_positions() {
    // The same prompt with and without three pads in front gives the same logits.
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 5);
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    let plain = Tensor::from_slice2(&[[5i64, 6, 7, 8, 9]]);
    let padded = Tensor::from_slice2(&[[0i64, 0, 0, 5, 6, 7, 8, 9]]);
    let mask = Tensor::from_slice2(&[[0i64, 0, 0, 1, 1, 1, 1, 1]]);
    let a = model.forward_logits(&plain, None);
    let b = model.forward_logits(&padded, Some(&mask)).narrow(1, 3, 5);
    // Padding changes the key count of every attention softmax and the matmul blocking;
    // the longest chained reduction is the MLP's, once per layer plus the lm_head.
    let tol = common::forward_tolerance(a.abs().max().double_value(&[]), model.config());
    let diff = (a - b).abs().max().double_value(&[]);
    eprintln!("left padding: max |Δlogit| = {diff:e} (tolerance {tol:e})");
    assert!(diff <= tol, "diff {diff} > tolerance {tol}");
}

#[test]
fn gradients_reach_every_parameter() {
    let tmp = tempfile::tempdir().unwrap();
    for tied in [false, true] {
        let dir = common::tiny_model(tmp.path(), tied, 9);
        let model = load_model(&dir, LoadOptions::default()).unwrap();
        let ids = Tensor::from_slice2(&[[3i64, 14, 15, 92, 65, 35], [0, 0, 27, 18, 28, 18]]);
        let mask = Tensor::from_slice2(&[[1i64, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]);
        let hidden = model.hidden_states(&ids, Some(&mask));
        let select = mask.ne(0);
        let logits = model.token_logits(&hidden, &select);
        let targets = ids.masked_select(&select);
        let loss = logits.log_softmax(-1, Kind::Float).nll_loss(&targets);
        loss.backward();
        for (name, var) in model.var_store().variables() {
            let g = var.grad();
            assert!(g.defined(), "{name}: no gradient");
            assert!(
                bool::try_from(g.isfinite().all()).unwrap(),
                "{name}: non-finite gradient"
            );
            assert!(
                g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}: zero gradient"
            );
        }
    }
}

#[test]
fn token_logits_apply_the_shift() {
    // token_logits at position p reads hidden row p-1 (row 0 for p = 0) on Dream models.
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 1);
    let model = load_model(&dir, LoadOptions::default()).unwrap();
    let ids = Tensor::from_slice2(&[[1i64, 2, 3, 4]]);
    let full = model.forward_logits(&ids, None); // [1, 4, V]
    let hidden = model.hidden_states(&ids, None);
    let select = Tensor::from_slice2(&[[true, false, true, true]]);
    let got = model.token_logits(&hidden, &select); // rows for positions 0, 2, 3
    let want = Tensor::stack(
        &[full.get(0).get(0), full.get(0).get(1), full.get(0).get(2)],
        0,
    );
    // Both are the same lm_head rows; only the matmul's blocking over 4 vs 3 rows differs,
    // one reduction of hidden_size terms.
    let tol = common::f32_order_tolerance(
        want.abs().max().double_value(&[]),
        model.config().hidden_size as usize,
        1,
    );
    let diff = (got - want).abs().max().double_value(&[]);
    eprintln!("shift: max |Δlogit| = {diff:e} (tolerance {tol:e})");
    assert!(diff <= tol, "diff {diff} > tolerance {tol}");
}
