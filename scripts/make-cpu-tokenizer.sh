#!/usr/bin/env bash
# Rebuilds data/tokenizer-cpu/tokenizer.json, the small byte-level BPE tokenizer of the CPU
# demos: 4096 tokens trained on the Python standard library's own source (PSF licence) of
# the project's .venv interpreter, with Qwen's chat tokens and Dream's <|beginoftext|> and
# <|mask|> as special tokens. The result is committed; run this only to change it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
stdlib=$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
mapfile -t files < <(find "$stdlib" -maxdepth 2 -name '*.py' -not -path '*/test*' -not -path '*/site-packages/*' | sort)
echo "training on ${#files[@]} files from $stdlib"
mkdir -p data/tokenizer-cpu
cargo run --release -q -p couplet-model --example train_tokenizer -- data/tokenizer-cpu/tokenizer.json 4096 "${files[@]}"
