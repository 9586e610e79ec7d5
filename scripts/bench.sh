#!/usr/bin/env bash
# Prints what requests cost, with no pass/fail (speed targets live here, not in tests):
# 1. CPU of the heavy paths in the release wasm, run in Node (V8, as workerd): synthetic
#    PNGs per size and style, decoding a Gemini image response, bcrypt per cost;
# 2. what each kind of request costs workerd under `wrangler dev` (CPU per request from
#    /proc, idle subtracted; wall p50/p99) and the bundle size (scripts/cost_bench.py).
# BENCH_N sets the requests per kind (default 60); BENCH_COMPARE=DIR measures another
# checkout's build beside this one (see scripts/cost_bench.py). About 3 minutes once built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
source scripts/env.sh
cargo test --release --locked --target wasm32-unknown-unknown --test bench -- --nocapture 2>&1 | grep -E "bench:|panicked|FAIL" | sed 's/^.*bench: //'
bash scripts/build.sh
NANOBANANA_SKIP_BUILD=1 .venv/bin/python scripts/cost_bench.py
