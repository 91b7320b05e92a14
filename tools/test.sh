#!/usr/bin/env bash
# Builds and runs the whole test suite: Release (what users run, plus a short run of every
# benchmark so none rots), ASan+UBSan (memory and undefined behaviour), and TSan (the
# concurrent parts). Exit 0 only when every test passed in every build.
#
# Longer randomized budgets: LOCKSTEP_TEST_SCALE=10 tools/test.sh
# Replay a failing randomized test: LOCKSTEP_TEST_SEED=<seed printed by the failure>.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOCKSTEP_TEST_DIR=${LOCKSTEP_TEST_DIR:-$PWD/build/test-data}
mkdir -p "$LOCKSTEP_TEST_DIR"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run() {  # run FLAVOUR [ctest args...]
  local flavour=$1; shift
  echo "== $flavour: build" >&2
  tools/build.sh "$flavour"
  echo "== $flavour: test" >&2
  ctest --test-dir "build/$flavour" --output-on-failure -j"$(nproc)" "$@"
}

run release
run asan
run tsan
echo "== all tests passed (release, asan+ubsan, tsan)" >&2
