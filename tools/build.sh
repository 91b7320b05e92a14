#!/usr/bin/env bash
# Configures and builds one flavour of Lockstep into build/<flavour>.
#
#   tools/build.sh release   optimized (-O2, assertions on), with tests and benchmarks
#   tools/build.sh asan      AddressSanitizer + UndefinedBehaviorSanitizer, tests only, with the
#                            torture suite's planted bugs compiled in (off unless planted)
#   tools/build.sh tsan      ThreadSanitizer, tests only
#   tools/build.sh debug     -O0 -g, tests and benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-release}
case "$flavour" in
  release) args=(-DCMAKE_BUILD_TYPE=Release -DLOCKSTEP_PLANTED_BUGS=OFF) ;;
  debug)   args=(-DCMAKE_BUILD_TYPE=Debug -DLOCKSTEP_PLANTED_BUGS=OFF) ;;
  # The ASan build is a test build only: it alone carries the torture suite's planted bugs
  # (docs/testing.md), switched off unless a test plants one.
  asan)    args=(-DCMAKE_BUILD_TYPE=Debug -DLOCKSTEP_SANITIZE=address,undefined
                 -DLOCKSTEP_BUILD_BENCH=OFF -DLOCKSTEP_PLANTED_BUGS=ON) ;;
  tsan)    args=(-DCMAKE_BUILD_TYPE=Debug -DLOCKSTEP_SANITIZE=thread -DLOCKSTEP_BUILD_BENCH=OFF
                 -DLOCKSTEP_PLANTED_BUGS=OFF) ;;
  *) echo "usage: tools/build.sh release|debug|asan|tsan" >&2; exit 2 ;;
esac
cmake -S . -B "build/$flavour" -G Ninja "${args[@]}" >/dev/null
cmake --build "build/$flavour" -- -j"$(nproc)"
