#!/usr/bin/env bash
# Runs lockstep-bench briefly in every workload so it cannot rot, and checks its contract: JSON
# lines with the required keys, a refused tmpfs --dir, and nothing left behind in --dir.
set -euo pipefail
bench=$1
dir=$(mktemp -d "${LOCKSTEP_TEST_DIR:-$PWD}/bench-smoke.XXXXXX")
trap 'rm -rf "$dir"' EXIT
common=(--json --dir "$dir" --seconds 0.5)
out=$("$bench" "${common[@]}" --workload disk --outstanding 4 --record-bytes 512)
out+=$'\n'$("$bench" "${common[@]}" --workload append --outstanding 8 --record-bytes 200)
echo "$out"
# disk: zero-fill, fallocate and extended rows; append: one row.
[[ $(echo "$out" | grep -c '^{') -eq 4 ]] || { echo "expected 4 JSON lines" >&2; exit 1; }
keys="workload system outstanding record_bytes ops seconds ops_per_s mb_per_s p50_us p99_us p999_us"
for key in $keys; do
  [[ $(echo "$out" | grep -c "\"$key\":") -eq 4 ]] || { echo "key $key missing" >&2; exit 1; }
done
if ! echo "$out" | grep '"workload":"append"' | grep -q '"system":"lockstep"'; then
  echo "no append row" >&2
  exit 1
fi
if echo "$out" | grep -q '"ops":0,'; then echo "a run counted no ops" >&2; exit 1; fi
# The engine workloads (issue 3): transfer on both systems, events with and without sync. A
# second each: on a busy disk one fdatasync has been seen to stall past 0.2 s, leaving a
# durable run with no commit inside a shorter window.
engine_common=(--json --dir "$dir" --seconds 1)
eng=$("$bench" "${engine_common[@]}" --workload transfer --outstanding 4 --accounts 1000)
eng+=$'\n'$("$bench" "${engine_common[@]}" --workload transfer --system rocksdb --outstanding 4 \
  --accounts 1000)
eng+=$'\n'$("$bench" "${engine_common[@]}" --workload events --outstanding 16 --record-bytes 100)
eng+=$'\n'$("$bench" "${engine_common[@]}" --workload events --outstanding 16 --record-bytes 100 \
  --no-sync)
echo "$eng"
[[ $(echo "$eng" | grep -c '"conflicts":') -eq 4 ]] || { echo "conflicts key missing" >&2; exit 1; }
[[ $(echo "$eng" | grep -c '"durable":true') -eq 3 ]] || { echo "durable rows wrong" >&2; exit 1; }
[[ $(echo "$eng" | grep -c '"durable":false') -eq 1 ]] || { echo "--no-sync row wrong" >&2; exit 1; }
if echo "$eng" | grep -q '"ops":0,'; then echo "an engine run counted no ops" >&2; exit 1; fi
if "$bench" --dir "$dir" --workload append --system rocksdb 2>/dev/null; then
  echo "rocksdb accepted for append" >&2
  exit 1
fi
[[ -z $(ls -A "$dir") ]] || { echo "bench left files in --dir" >&2; ls -la "$dir" >&2; exit 1; }
if [[ -d /dev/shm ]] && [[ $(stat -f -c %T /dev/shm) == tmpfs ]]; then
  if "$bench" --dir /dev/shm --seconds 0.1 2>/dev/null; then
    echo "tmpfs --dir accepted" >&2
    exit 1
  fi
fi
if "$bench" --workload nope 2>/dev/null; then echo "bad --workload accepted" >&2; exit 1; fi
echo "bench smoke test passed"
