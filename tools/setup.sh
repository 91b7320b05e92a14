#!/usr/bin/env bash
# Installs every build and test dependency of Lockstep on Debian 12 (idempotent), then builds.
#
#   tools/setup.sh              install packages, build Release into build/release
#   tools/setup.sh --no-build   install packages only
#
# Packages come only from Debian 12; see ../shared/LIBRARIES.md for why each one is here.
# Never add libboost-dev: it is Boost 1.74 and conflicts with libboost1.81-dev.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config git
  liburing-dev libxxhash-dev liburcu-dev libjemalloc-dev
  libboost1.81-dev librocksdb-dev
  libflatbuffers-dev flatbuffers-compiler
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev
  prometheus-cpp-dev prometheus  # metrics (core library), promtool (the metrics lint test)
  jq
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all packages present" >&2
fi

if [[ "${1:-}" != "--no-build" ]]; then
  tools/build.sh release
fi
