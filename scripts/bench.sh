#!/usr/bin/env bash
# Prints CPU figures of the heavy paths in the release wasm, run in Node (V8, as workerd):
# synthetic PNGs per size and style, decoding a Gemini image response, bcrypt per cost.
# Figures only, no pass/fail: speed targets live here, not in the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cargo test --release --locked --target wasm32-unknown-unknown --test bench -- --nocapture 2>&1 | grep "bench:" | sed 's/^.*bench: //'
