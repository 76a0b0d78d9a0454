#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration, parity against the .venv PyTorch
# references). Needs scripts/setup.sh to have run once.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
source scripts/env.sh
cargo test --release --workspace "$@"
