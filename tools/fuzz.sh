#!/usr/bin/env bash
# Builds the fuzz targets with clang, libFuzzer, ASan and UBSan into build/fuzz, then fuzzes one.
#
#   tools/fuzz.sh TARGET [SECONDS]      TARGET: frame | records | segment | checkpoint
#                                       SECONDS: how long (default 300)
#
# It starts from the repository's corpus (tests/fuzz/corpus/TARGET) and keeps what it finds in
# build/fuzz/corpus/TARGET; a crash, a leak or a hang leaves its input in build/fuzz/findings/.
# Exit 0: no finding. A finding: add its input to tests/fuzz/corpus/TARGET (it becomes a
# regression test that CI replays) and fix the bug. See docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: tools/fuzz.sh frame|records|segment|checkpoint [SECONDS]}
seconds=${2:-300}
case "$target" in
  frame|records|segment|checkpoint) ;;
  *) echo "tools/fuzz.sh: unknown target $target (frame, records, segment, checkpoint)" >&2; exit 2 ;;
esac
tools/setup.sh --no-build  # the build's own dependencies
if ! command -v clang++ >/dev/null; then  # libFuzzer comes with Debian's clang
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "fuzz: installing clang" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang >/dev/null
fi
CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLOCKSTEP_FUZZ=ON -DLOCKSTEP_SANITIZE=address,undefined -DLOCKSTEP_BUILD_BENCH=OFF \
  -DLOCKSTEP_WERROR=OFF -DLOCKSTEP_PLANTED_BUGS=OFF >/dev/null
cmake --build build/fuzz --target "fuzz_$target"
mkdir -p "build/fuzz/corpus/$target" build/fuzz/findings
exec "build/fuzz/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=build/fuzz/findings/ \
  "build/fuzz/corpus/$target" "tests/fuzz/corpus/$target"
