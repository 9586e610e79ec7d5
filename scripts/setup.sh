#!/usr/bin/env bash
# Installs what building, running and testing the Worker need. Run by build.sh, dev.sh
# and test.sh; idempotent, and quiet when everything is already there. `--tests` also
# prepares the Python virtualenv of the end-to-end tests. scripts/env.sh exports the
# variables that point worker-build at what this installs.
#
# worker-build would download wasm-bindgen, esbuild and wasm-opt from the internet; this
# machine reaches only the package registries, so each comes from one of them instead.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
WORKER_BUILD_VERSION="0.8.7"

say() { printf '==> %s\n' "$*" >&2; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown Rust target"
  rustup target add wasm32-unknown-unknown >&2
fi

if [ "$(worker-build --version 2>/dev/null || true)" != "$WORKER_BUILD_VERSION" ]; then
  say "installing worker-build $WORKER_BUILD_VERSION (first run only, about 3 minutes)"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked --quiet
fi

# wasm-bindgen's CLI must match the library in Cargo.lock exactly.
(cd "$ROOT" && [ -f Cargo.lock ] || cargo generate-lockfile --quiet)
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock")"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (first run only, about 2 minutes)"
  # No --locked: its lockfile names a webpki-roots release the registry does not serve.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --quiet
fi

# npm ci only when package-lock.json changed since the last install.
LOCK_SUM="$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$ROOT/node_modules/.installed-lock" 2>/dev/null || true)" != "$LOCK_SUM" ]; then
  say "installing npm packages (wrangler, binaryen)"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$LOCK_SUM" > "$ROOT/node_modules/.installed-lock"
fi

# wrangler dev's inspector proxy debug-logs every message of the runtime's inspector as
# one request to wrangler's Node process, and the runtime reports each chunk of every
# fetch response (Network.dataReceived): about 3,000 requests per 9 MB Gemini answer,
# whose connections workerd never closes, until "Too many open files" stops wrangler dev
# (docs/decisions/0005-wrangler-dev-fd-leak.md). Local dev only: the inspector proxy is
# not part of a deployed Worker. Idempotent; if a wrangler upgrade moves the line, say so.
IPW="$ROOT/node_modules/wrangler/wrangler-dist/InspectorProxyWorker.js"
UNPATCHED='this.sendDebugLog("RUNTIME INCOMING MESSAGE", msg);'
PATCHED='if (!String(msg.method).startsWith("Network.")) this.sendDebugLog("RUNTIME INCOMING MESSAGE", msg);'
if grep -qF "$UNPATCHED" "$IPW" && ! grep -qF "$PATCHED" "$IPW"; then
  sed -i "s/$(printf '%s' "$UNPATCHED" | sed 's/[][\.*^$/]/\\&/g')/$(printf '%s' "$PATCHED" | sed 's/[][\.*^$/&]/\\&/g')/" "$IPW"
elif ! grep -qF "$PATCHED" "$IPW"; then
  say "warning: wrangler's InspectorProxyWorker changed; the local fd-leak workaround is not applied"
fi

if [ "${1:-}" = "--tests" ]; then
  # The dependency gate of the test command (deny.toml).
  CARGO_DENY_VERSION="0.20.2"
  if [ "$(cargo deny --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DENY_VERSION" ]; then
    say "installing cargo-deny $CARGO_DENY_VERSION (first run only, about 5 minutes)"
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --quiet
  fi
  # The console's browser test drives Debian's Chromium through playwright-core (npm).
  if ! command -v chromium >/dev/null 2>&1; then
    say "installing Debian's chromium for the browser test (first run only)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
  fi
  REQ_SUM="$(sha256sum "$ROOT/tests/requirements.txt" | cut -d' ' -f1)"
  if [ "$(cat "$ROOT/.venv/.installed-requirements" 2>/dev/null || true)" != "$REQ_SUM" ]; then
    say "creating the test virtualenv (.venv) from tests/requirements.txt"
    python3 -m venv "$ROOT/.venv"
    "$ROOT/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/tests/requirements.txt" >&2
    echo "$REQ_SUM" > "$ROOT/.venv/.installed-requirements"
  fi
fi

