#!/usr/bin/env bash
# Operator commands, over `wrangler d1 execute`:
#
#   bash scripts/admin.sh promote EMAIL [--remote]   the account becomes an admin
#   bash scripts/admin.sh demote EMAIL [--remote]    back to an ordinary account
#
# Without --remote it acts on the local D1 of `bash scripts/dev.sh`. Anything after `--`
# goes to wrangler as it is (another config file, a --persist-to directory).
# Admins reach /v1/admin/ and the console's Admin page; see README, "Operating it".
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: bash scripts/admin.sh promote|demote EMAIL [--remote] [-- WRANGLER ARGS...]" >&2
  exit 2
}

[ $# -ge 2 ] || usage
action=$1
email=$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]' | tr -d '[:space:]')
shift 2
case "$action" in
  promote) role=admin ;;
  demote) role=user ;;
  *) usage ;;
esac
where=--local
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --remote) where=--remote ;;
    --local) where=--local ;;
    --) shift; extra=("$@"); break ;;
    *) usage ;;
  esac
  shift
done
# The email goes into SQL text (wrangler d1 execute binds nothing): only the characters of
# an address, and never a quote, get this far.
if ! [[ "$email" =~ ^[a-z0-9._%+=-]+@[a-z0-9.-]+$ ]]; then
  echo "admin.sh: '$email' is not an email address this service accepts" >&2
  exit 2
fi

bash scripts/setup.sh
source scripts/env.sh
out=$(wrangler d1 execute DB "$where" "${extra[@]}" --json \
  --command "UPDATE users SET role = '$role' WHERE email = '$email' RETURNING id, email, role")
changed=$(printf '%s' "$out" | node -e '
  let text = ""; process.stdin.on("data", (c) => (text += c)).on("end", () => {
    const results = JSON.parse(text).flatMap((r) => r.results || []);
    process.stdout.write(String(results.length));
  });')
if [ "$changed" = "0" ]; then
  echo "admin.sh: no account with the email $email" >&2
  exit 1
fi
echo "$email is now: $role"
