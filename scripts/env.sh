# Source this to build and test by hand: puts the project's .venv (torch 2.11.0) first on
# PATH and tells torch-sys to take libtorch from it.
#   source scripts/env.sh && cargo test --release
_couplet_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$_couplet_root/.venv/bin:$PATH"
export VIRTUAL_ENV="$_couplet_root/.venv"
export LIBTORCH_USE_PYTORCH=1
export LIBTORCH_BYPASS_VERSION_CHECK="${LIBTORCH_BYPASS_VERSION_CHECK:-0}"
unset _couplet_root
