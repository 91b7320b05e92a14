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
# The sanitizer builds are unity builds: each library, tool and test binary compiles a few of
# its sources as one translation unit, so the heavy headers (Asio, Beast, CLI11, GoogleTest) are
# parsed and their templates instantiated once per batch rather than once per file (the ASan
# build: 1,164 CPU-seconds of compiling before, 724 after). Files that cannot share a unit opt
# out (SKIP_UNITY_BUILD_INCLUSION). Release and debug compile every file alone, which keeps each
# file's includes honest.
case "$flavour" in
  asan|tsan) args+=(-DCMAKE_UNITY_BUILD=ON) ;;
  *)         args+=(-DCMAKE_UNITY_BUILD=OFF) ;;
esac
cmake -S . -B "build/$flavour" -G Ninja "${args[@]}" >/dev/null
cmake --build "build/$flavour" -- -j"$(nproc)"
