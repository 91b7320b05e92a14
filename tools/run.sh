#!/usr/bin/env bash
# Builds Lockstep (Release) and runs the server in the foreground with sane defaults: data in
# ./data, listening on 127.0.0.1:7070 (loopback only). Extra arguments go to lockstepd, e.g.
#   tools/run.sh --listen 127.0.0.1:0        # any free port; it prints the one it took
# Stop it with Ctrl-C (SIGINT) or SIGTERM: in-flight commits finish, then it exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh release
exec build/release/tools/lockstepd --data-dir ./data --listen 127.0.0.1:7070 "$@"
