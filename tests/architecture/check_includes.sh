#!/usr/bin/env bash
# Rejects an #include that points against DESIGN.md's dependency direction:
#   base <- storage <- engine <- protocol/server ;  base <- protocol/wire <- {server, clients}
# and anything that includes from tests/, bench/ or tools/ outside those folders.
set -euo pipefail
root=${1:-.}
cd "$root"
status=0
check() {  # check MODULE_DIR FORBIDDEN_PREFIX...
  local dir=$1; shift
  [[ -d $dir ]] || return 0
  for forbidden in "$@"; do
    if grep -rnE "#include \"${forbidden}" "$dir" --include='*.h' --include='*.cc' ; then
      echo "error: $dir must not include from $forbidden" >&2
      status=1
    fi
  done
}
check base       storage/ engine/ protocol/ clients/ tools/ tests/ bench/
check storage    engine/ protocol/ clients/ tools/ tests/ bench/
check engine     protocol/ clients/ tools/ tests/ bench/
check protocol/wire engine/ storage/ protocol/server/ clients/ tools/ tests/ bench/
check protocol/server clients/ tools/ tests/ bench/
check clients    engine/ storage/ protocol/server/ tools/ tests/ bench/
exit $status
