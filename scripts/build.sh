#!/usr/bin/env bash
# Builds the release Worker into build/ (wrangler.toml's [build] command).
# NANOBANANA_SKIP_BUILD=1 reuses an existing build: the test harness builds once and then
# starts several `wrangler dev` instances from it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${NANOBANANA_SKIP_BUILD:-}" = "1" ] && [ -f build/index.js ]; then
  exit 0
fi
bash scripts/setup.sh
source scripts/env.sh
echo "==> building the Worker (worker-build --release)" >&2
worker-build --release >&2
