//! The rollout worker: groups, chunking, end tokens, completion masks, telemetry.

use couplet_testkit as common;

use couplet_model::{chat_prompt, LoadOptions, LoadedModel};
use couplet_rollout::FastDecoding;
use couplet_rollout::{
    generate_rollout, DecoderConfig, DreamAlg, DreamDecodeConfig, RolloutConfig, SamplingParams,
};

fn config(batch: usize, end_tokens: Option<Vec<i64>>) -> RolloutConfig {
    RolloutConfig {
        decoder: DecoderConfig::Dream(DreamDecodeConfig {
            steps: 10,
            max_new_tokens: 10,
            alg: DreamAlg::Entropy,
            alg_temp: 0.0,
            sampling: SamplingParams {
                temperature: 1.0,
                top_p: Some(0.95),
                top_k: None,
            },
            eps: 1e-3,
            fast: FastDecoding::EXACT,
        }),
        group_size: 3,
        generation_batch_size: batch,
        max_prompt_length: None,
        end_tokens,
        progress: false,
    }
}

#[test]
fn chunking_does_not_change_the_rollout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 2);
    let ckpt = LoadedModel::load(&dir, LoadOptions::default()).unwrap();
    let prompts: Vec<String> = ["def add(a, b):", "Reverse a string.", "x"]
        .iter()
        .map(|q| chat_prompt("sys", q))
        .collect();
    let whole = generate_rollout(
        &ckpt.model,
        &ckpt.tokenizer,
        &prompts,
        &config(9, None),
        3,
        0,
    )
    .unwrap();
    let chunked = generate_rollout(
        &ckpt.model,
        &ckpt.tokenizer,
        &prompts,
        &config(2, None),
        3,
        0,
    )
    .unwrap();
    assert_eq!(whole.len(), 9);
    assert_eq!(whole.prompt_index, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
    assert_eq!(whole.texts, chunked.texts);
    assert_eq!(whole.decode_orders, chunked.decode_orders);
    let a = Vec::<Vec<i64>>::try_from(&whole.sequences()).unwrap();
    let b = Vec::<Vec<i64>>::try_from(&chunked.sequences()).unwrap();
    assert_eq!(a, b);
    // Group members differ (sampling at τ = 1 with per-sample draws).
    assert!(a[0] != a[1] || a[1] != a[2]);
    // Every completion position was revealed exactly once and the prompt kept.
    for (row, order) in whole.decode_orders.iter().enumerate() {
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "row {row}");
    }
    let mask = ckpt.tokenizer.special().mask;
    assert!(!a.iter().flatten().any(|&t| t == mask));
    // A different seed gives a different rollout.
    let other = generate_rollout(
        &ckpt.model,
        &ckpt.tokenizer,
        &prompts,
        &config(9, None),
        4,
        0,
    )
    .unwrap();
    assert_ne!(Vec::<Vec<i64>>::try_from(&other.sequences()).unwrap(), a);
}

#[test]
fn completions_end_at_the_first_end_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 2);
    let ckpt = LoadedModel::load(&dir, LoadOptions::default()).unwrap();
    let prompts = vec![chat_prompt("sys", "hello")];
    let free = generate_rollout(
        &ckpt.model,
        &ckpt.tokenizer,
        &prompts,
        &config(3, Some(vec![])),
        1,
        0,
    )
    .unwrap();
    // Declare the token at completion offset 4 of row 0 an end token: row 0 must end there.
    let ids = Vec::<Vec<i64>>::try_from(&free.completion_ids).unwrap();
    let end = ids[0][4];
    let first = ids[0].iter().position(|&t| t == end).unwrap();
    let cut = generate_rollout(
        &ckpt.model,
        &ckpt.tokenizer,
        &prompts,
        &config(3, Some(vec![end])),
        1,
        0,
    )
    .unwrap();
    assert_eq!(cut.completion_lengths[0], first + 1);
    assert!(cut.terminated[0]);
    let mask = Vec::<Vec<i64>>::try_from(&cut.completion_mask).unwrap();
    assert_eq!(mask[0].iter().sum::<i64>() as usize, first + 1);
    assert!(
        mask[0][..=first].iter().all(|&m| m == 1) && mask[0][first + 1..].iter().all(|&m| m == 0)
    );
    assert_eq!(
        cut.texts[0],
        ckpt.tokenizer.decode(&ids[0][..=first]).unwrap()
    );
    assert_eq!(free.completion_lengths, vec![10, 10, 10]);
    assert!(free.terminated.iter().all(|t| !t));
    let ar = cut.mean_arness();
    assert_eq!((ar.local.len(), ar.global.len()), (9, 4));
    assert!(ar
        .local
        .iter()
        .chain(&ar.global)
        .all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn bad_rollout_settings_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 2);
    let ckpt = LoadedModel::load(&dir, LoadOptions::default()).unwrap();
    let mut cfg = config(3, None);
    cfg.group_size = 0;
    let err =
        generate_rollout(&ckpt.model, &ckpt.tokenizer, &["x".into()], &cfg, 0, 0).unwrap_err();
    assert!(err.to_string().contains("group_size"), "{err}");
}
