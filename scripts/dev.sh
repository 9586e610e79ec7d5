#!/usr/bin/env bash
# README command 1: serve the API at http://127.0.0.1:8787 with local D1 and R2.
# Installs the toolchain on first run, writes .dev.vars with a fresh JWT_SECRET if there
# is none, applies migrations/ to the local D1, then runs `wrangler dev` (which builds).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8787}"

bash scripts/setup.sh
source scripts/env.sh

if [ ! -f .dev.vars ]; then
  echo "==> writing .dev.vars with a freshly generated JWT_SECRET"
  secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  sed "s/^JWT_SECRET=.*/JWT_SECRET=$secret/" .dev.vars.example > .dev.vars
fi

echo "==> applying migrations to the local D1 (.wrangler/state)"
wrangler d1 migrations apply DB --local

echo "==> starting wrangler dev on http://127.0.0.1:$PORT (Ctrl-C to stop)"
exec wrangler dev --local --ip 127.0.0.1 --port "$PORT" --show-interactive-dev-session=false
