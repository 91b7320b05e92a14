#!/usr/bin/env bash
# Runs the README's five-minute walkthrough exactly as written (the block between the
# quickstart markers) in a scratch folder, with lockstepd on a free port, so the README never
# rots. Usage: quickstart_test.sh REPOSITORY TOOLS_DIR (the build's folder of lockstepd and
# lockstep).
set -euo pipefail
repo=$1
tools=$2
work=$(mktemp -d "${LOCKSTEP_TEST_DIR:-/tmp}/quickstart.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/build/release"
ln -s "$tools" "$work/build/release/tools"
{
  # Whatever happens, the server the walkthrough started is stopped, by its id.
  echo 'trap '\''if [ -n "${SERVER:-}" ]; then kill -9 "$SERVER" 2>/dev/null || true; fi'\'' EXIT'
  echo "trap 'exit 1' TERM INT"
  sed -n '/<!-- quickstart:begin -->/,/<!-- quickstart:end -->/p' "$repo/README.md" |
    sed '/^```/d; /^<!--/d'
} > "$work/quickstart.sh"
grep -q 'lockstep txn' "$work/quickstart.sh" || { echo "no quickstart block in README.md"; exit 1; }
cd "$work"
export LOCKSTEP_LISTEN=127.0.0.1:0  # a free port; the walkthrough reads it from lockstepd
timeout 120 bash -euo pipefail quickstart.sh
echo "quickstart: every command of the README walkthrough ran"
