//! Trains the small byte-level BPE tokenizer used by the CPU demos (run through
//! `scripts/make-cpu-tokenizer.sh`). The output is committed under `data/tokenizer-cpu/`,
//! so nothing trains it at setup or test time.
//!
//! usage: train_tokenizer OUT_JSON VOCAB_SIZE FILE...

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

/// Special tokens, in id order: Qwen's text/chat markers, then Dream's two additions.
const SPECIAL: [&str; 5] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|beginoftext|>",
    "<|mask|>",
];

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, vocab, files @ ..] = args.as_slice() else {
        return Err("usage: train_tokenizer OUT_JSON VOCAB_SIZE FILE...".into());
    };
    let vocab_size: usize = vocab
        .parse()
        .map_err(|e| format!("VOCAB_SIZE {vocab:?}: {e}"))?;
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(SPECIAL.iter().map(|t| AddedToken::from(*t, true)).collect())
        .build();
    let mut tokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(ByteLevel::new(false, false, true)))
        .with_decoder(Some(ByteLevel::default()))
        .build()?;
    let mut files = files.to_vec();
    files.sort();
    tokenizer
        .train_from_files(&mut trainer, files)?
        .save(out, false)?;
    println!("wrote {out}: {} tokens", tokenizer.get_vocab_size(true));
    Ok(())
}
