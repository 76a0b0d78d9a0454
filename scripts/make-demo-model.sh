#!/usr/bin/env bash
# Builds data/demo-model, the bundled demo model: a small Dream-architecture model (6 layers,
# hidden 256, 5.3 M parameters, tied embeddings, unshifted logits, token embedding N(0, 1))
# on the 4096-token CPU tokenizer, initialised from a fixed seed and fine-tuned with
# `couplet sft` (masked-diffusion objective) on SFT rows generated fresh by
# scripts/make-tasks.py: every template's constant pairs except the validation split's, and
# in a share (--bug-share) of the rows the template's plausible bug instead of the correct
# body — so the model starts RL making that mistake with some probability on every prompt of
# a template, and unit-test rewards can remove it (see docs/guide/cpu-demo.md).
# Two phases: --copy-steps at a constant lr (copying the question's constants is learned
# abruptly around step 300–400, and not at all under a cosine decay from the start), then
# --decay-steps on the following rows with the lr decaying linearly to 0.
# Deterministic from the seed on a given CPU (kernels round differently on other CPUs).
# `scripts/setup.sh` runs it when data/demo-model is missing.
#
#     scripts/make-demo-model.sh [--copy-steps N] [--decay-steps M] [--seed S] [--out DIR]
#                                [--bug-share Q] [--pad-weight W] [--lr LR] [--no-eval]
set -euo pipefail
cd "$(dirname "$0")/.."
copy_steps=600
decay_steps=200
seed=1
out=data/demo-model
bug_share=0.5
pad_weight=0.1
lr=1e-3
batch=16
evaluate=1
usage="usage: $0 [--copy-steps N] [--decay-steps M] [--seed S] [--out DIR] [--bug-share Q] [--pad-weight W] [--lr LR] [--no-eval]"
while [ $# -gt 0 ]; do
  case "$1" in
    --copy-steps) copy_steps=$2; shift 2 ;;
    --decay-steps) decay_steps=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bug-share) bug_share=$2; shift 2 ;;
    --pad-weight) pad_weight=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --no-eval) evaluate=0; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
bin=target/release/couplet
[ -x "$bin" ] || { echo "$bin missing: run scripts/setup.sh first" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/.demo-model-XXXXXX")
trap 'rm -rf "$work"' EXIT
.venv/bin/python scripts/make-tasks.py --sft $(((copy_steps + decay_steps) * batch)) \
  --bug-share "$bug_share" --seed 1234 --out-sft "$work/sft.jsonl"
head -n $((copy_steps * batch)) "$work/sft.jsonl" > "$work/sft-copy.jsonl"
tail -n +$((copy_steps * batch + 1)) "$work/sft.jsonl" > "$work/sft-decay.jsonl"
"$bin" init-model --preset small --tokenizer data/tokenizer-cpu/tokenizer.json \
  --out "$work/init" --seed "$seed" --tie-embeddings --no-shift --embedding-std 1.0
"$bin" sft --model "$work/init" --data "$work/sft-copy.jsonl" --out "$work/copy" \
  --steps "$copy_steps" --answer-length 48 --pad-weight "$pad_weight" --batch-size "$batch" \
  --lr "$lr" --schedule constant --warmup-steps 20 --seed "$seed" --log-every 100
"$bin" sft --model "$work/copy" --data "$work/sft-decay.jsonl" --out "$work/model" \
  --steps "$decay_steps" --answer-length 48 --pad-weight "$pad_weight" --batch-size "$batch" \
  --lr "$lr" --schedule linear --warmup-steps 10 --seed $((seed + 1)) --log-every 100
if [ "$evaluate" = 1 ]; then
  # Validation pass@1 sampled with the demo's rollout settings: what RL starts from.
  "$bin" eval --model "$work/model" --benchmark data/tasks/val.jsonl --samples 1 --alg origin \
    --steps 24 --max-new-tokens 48 --temperature 1.0 --top-p 0.95 --batch-size 52
fi
rm -rf "$out"
mv "$work/model" "$out"
echo "wrote $out ($(du -sh "$out" | cut -f1))"
