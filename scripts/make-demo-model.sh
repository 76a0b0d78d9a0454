#!/usr/bin/env bash
# Builds data/demo-model, the bundled demo model: a small Dream model (6 layers, hidden 256,
# 5.3 M parameters, tied embeddings) on the 4096-token CPU tokenizer, initialised from a
# fixed seed and fine-tuned with `couplet sft` (masked-diffusion objective) on the train
# split of the bundled task set, then evaluated on the validation split. Deterministic from
# the seed on a given machine (CPU kernels may round differently on other CPUs).
# `scripts/setup.sh` runs it when data/demo-model is missing (about 5 minutes on 2 cores).
#
#     scripts/make-demo-model.sh [--steps N] [--seed S] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=1200
seed=1
out=data/demo-model
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--steps N] [--seed S] [--out DIR]" >&2; exit 2 ;;
  esac
done
bin=target/release/couplet
[ -x "$bin" ] || { echo "$bin missing: run scripts/setup.sh first" >&2; exit 1; }
work=$(mktemp -d "${out%/*}/.demo-model-XXXXXX")
trap 'rm -rf "$work"' EXIT
"$bin" init-model --preset small --tokenizer data/tokenizer-cpu/tokenizer.json \
  --out "$work/init" --seed "$seed" --tie-embeddings
"$bin" sft --model "$work/init" --data data/tasks/train.jsonl --out "$work/model" \
  --steps "$steps" --answer-length 48 --batch-size 16 --lr 1.5e-3 --schedule cosine --warmup-steps 20 \
  --seed "$seed" --log-every 100
# Validation pass@1: greedy, and at the demo's rollout temperature (what RL starts from).
"$bin" eval --model "$work/model" --benchmark data/tasks/val.jsonl --samples 1 \
  --steps 24 --max-new-tokens 48 --batch-size 64
"$bin" eval --model "$work/model" --benchmark data/tasks/val.jsonl --samples 4 \
  --steps 24 --max-new-tokens 48 --temperature 1.0 --top-p 0.95 --batch-size 64
rm -rf "$out"
mv "$work/model" "$out"
echo "wrote $out ($(du -sh "$out" | cut -f1))"
