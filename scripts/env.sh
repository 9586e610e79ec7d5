# Sourced (not run) after scripts/setup.sh: points worker-build at the tools setup
# installed instead of its own downloads, and puts cargo and npm binaries on PATH.
NB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$NB_ROOT/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export WASM_BINDGEN_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/wasm-bindgen"
export ESBUILD_BIN="$NB_ROOT/node_modules/.bin/esbuild"
export WASM_OPT_BIN="$NB_ROOT/node_modules/.bin/wasm-opt"
export WRANGLER_SEND_METRICS=false
