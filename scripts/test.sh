#!/usr/bin/env bash
# README command 2: every check and every test. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }
# The release wasm's budget: 1 MiB raw and 300 KiB gzipped (the bundle is paid at every
# cold start; issue 14). Over either, the run fails.
WASM_LIMIT=1048576
WASM_GZ_LIMIT=307200

bash scripts/setup.sh --tests
source scripts/env.sh

step "cargo fmt --check"
cargo fmt --check

step "clippy, host and wasm32 (-D warnings)"
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --target wasm32-unknown-unknown -- -D warnings

step "cargo deny: banned crates, duplicate majors, licenses, sources (deny.toml)"
cargo deny --log-level error check bans licenses sources

step "unit tests, native (public/openapi.json, the module graph and the configuration docs are checked here too)"
cargo test --locked

step "wasm-bindgen tests, in Node"
cargo test --locked --target wasm32-unknown-unknown --test wasm

step "JS entry guard tests"
node --test js/

step "release build"
bash scripts/build.sh
wasm_raw=$(stat -c %s build/index_bg.wasm)
wasm_gz=$(gzip -9 -c build/index_bg.wasm | wc -c)
echo "wasm: ${wasm_raw} bytes raw, ${wasm_gz} bytes gzipped (limits ${WASM_LIMIT} raw, ${WASM_GZ_LIMIT} gzipped)"
if [ "$wasm_raw" -gt "$WASM_LIMIT" ]; then
  echo "FAIL: the release wasm is ${wasm_raw} bytes, over the ${WASM_LIMIT}-byte budget" >&2
  exit 1
fi
if [ "$wasm_gz" -gt "$WASM_GZ_LIMIT" ]; then
  echo "FAIL: the release wasm is ${wasm_gz} bytes gzipped, over the ${WASM_GZ_LIMIT}-byte budget" >&2
  exit 1
fi

step "end-to-end tests: wrangler dev + local D1/R2 + fake Gemini"
NANOBANANA_SKIP_BUILD=1 .venv/bin/python -m pytest tests/e2e "$@"
