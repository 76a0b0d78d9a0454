#!/usr/bin/env bash
# Builds data/demo-model, the bundled demo model: a small Dream-architecture model (6 layers,
# hidden 256, 5.3 M parameters, tied embeddings, unshifted logits) on the 4096-token CPU
# tokenizer, initialised from a fixed seed and fine-tuned with `couplet sft`
# (masked-diffusion objective) on SFT rows generated fresh by scripts/make-tasks.py: every
# template's constant combinations except the validation split's, and in a share
# (--bug-share) of the rows the template's plausible bug instead of the correct body — so the
# model starts RL making that mistake with some probability on every prompt of a template,
# and unit-test rewards can remove it (see README, "The CPU demo").
# Deterministic from the seed on a given CPU (kernels round differently on other CPUs).
# `scripts/setup.sh` runs it when data/demo-model is missing.
#
#     scripts/make-demo-model.sh [--steps N] [--seed S] [--out DIR] [--bug-share Q]
#                                [--pad-weight W] [--shift] [--lr LR]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=1500
seed=1
out=data/demo-model
bug_share=0.5
pad_weight=0.1
lr=1e-3
shift_flag=--no-shift
batch=16
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bug-share) bug_share=$2; shift 2 ;;
    --pad-weight) pad_weight=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --shift) shift_flag=; shift ;;
    *) echo "usage: $0 [--steps N] [--seed S] [--out DIR] [--bug-share Q] [--pad-weight W] [--shift] [--lr LR]" >&2; exit 2 ;;
  esac
done
bin=target/release/couplet
[ -x "$bin" ] || { echo "$bin missing: run scripts/setup.sh first" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/.demo-model-XXXXXX")
trap 'rm -rf "$work"' EXIT
.venv/bin/python scripts/make-tasks.py --sft $((steps * batch)) --bug-share "$bug_share" \
  --seed 1234 --out-sft "$work/sft.jsonl"
"$bin" init-model --preset small --tokenizer data/tokenizer-cpu/tokenizer.json \
  --out "$work/init" --seed "$seed" --tie-embeddings $shift_flag
"$bin" sft --model "$work/init" --data "$work/sft.jsonl" --out "$work/model" \
  --steps "$steps" --answer-length 48 --pad-weight "$pad_weight" --batch-size "$batch" \
  --lr "$lr" --schedule cosine --warmup-steps 20 --seed "$seed" --log-every 100
# Validation pass@1 at the demo's rollout temperature (what RL starts from), and greedy.
"$bin" eval --model "$work/model" --benchmark data/tasks/val.jsonl --samples 4 \
  --steps 24 --max-new-tokens 48 --temperature 1.0 --top-p 0.95 --batch-size 64
"$bin" eval --model "$work/model" --benchmark data/tasks/val.jsonl --samples 1 \
  --steps 24 --max-new-tokens 48 --batch-size 64
rm -rf "$out"
mv "$work/model" "$out"
echo "wrote $out ($(du -sh "$out" | cut -f1))"
