#!/usr/bin/env bash
# Builds Lockstep (Release) and runs the best end-to-end job there is today: durable appends
# through the log into ./data on the real disk, measured against raw write+fdatasync of the same
# disk in the same run. (Once lockstepd exists, this starts it on 127.0.0.1:7070 instead.)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh release
mkdir -p data
bench=build/release/bench/lockstep-bench
seconds=${LOCKSTEP_RUN_SECONDS:-2}
echo "Durable appends into $PWD/data (each row: ops/s and latency; see docs/benchmarks.md)" >&2
"$bench" --dir data --workload disk --outstanding 1 --record-bytes 4096 --seconds "$seconds"
"$bench" --dir data --workload append --outstanding 1 --record-bytes 200 --seconds "$seconds"
"$bench" --dir data --workload append --outstanding 256 --record-bytes 200 --seconds "$seconds"
