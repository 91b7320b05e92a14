#!/usr/bin/env bash
# Every lockstepd setting, from each of its three sources: a bad value as a flag, as a LOCKSTEP_*
# variable and as a config-file key is refused with exit 2 and a message naming it; a good value
# from the config file starts the server. Then the config file's own errors (unknown key, wrong
# type, bad syntax, missing file), the order of precedence (flag, variable, file, default), and
# the metrics listener of a real lockstepd (/readyz, /metrics).
#
#   lockstepd_settings_test.sh LOCKSTEPD
#
# A setting that --help lists but this script does not know fails the test: a new setting must
# come with its own checks.
set -uo pipefail
lockstepd=$1
scratch=$(mktemp -d "${LOCKSTEP_TEST_DIR:-/tmp}/settings.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
status=0
fail() { echo "FAIL: $*" >&2; status=1; }

# key -> "BAD|GOOD" (GOOD is given through the config file; quoted where TOML needs a string).
declare -A values=(
  [data-dir]='/dev/null/x|"'$scratch'/data-good"'
  [listen]='nohost|"127.0.0.1:0"'
  [allow-remote]='maybe|true'
  [max-connections]='0|100'
  [max-frame-bytes]='100|1048576'
  [max-inflight-requests]='0|10'
  [max-queued-bytes]='0|1048576'
  [idle-timeout-ms]='0|5000'
  [handshake-timeout-ms]='0|5000'
  [io-threads]='0|2'
  [version-window-ms]='-5|1000'
  [table-bytes-max]='abc|1000000000'
  [segment-bytes]='1000|1048576'
  [batch-bytes-max]='0|65536'
  [checkpoint-every-bytes]='-1|0'
  [checkpoint-every-ms]='-1|0'
  [log-level]='loud|"debug"'
  [metrics]='nohost|"127.0.0.1:0"'
  [group-min-session-timeout-ms]='0|1000'
  [group-max-session-timeout-ms]='99999999999|30000'
  [group-max-members]='0|10'
  [max-groups]='-1|100'
  [group-max-topics]='0|5'
)

listen_arg=(--listen 127.0.0.1:0)
# Runs lockstepd with the listener on a free port (listen_arg); succeeds if it
# printed "listening on" and then stopped with exit 0 on SIGTERM. Output in $scratch/out, err.
starts() {  # starts [ARGS...]  (the environment is the caller's)
  local pid line
  "$lockstepd" "${listen_arg[@]}" "$@" >"$scratch/out" 2>"$scratch/err" &
  pid=$!
  for _ in $(seq 100); do
    line=$(head -n 1 "$scratch/out")
    [[ -n $line ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ $line != "listening on 127.0.0.1:"* ]]; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 1
  fi
  kill -TERM "$pid"
  wait "$pid"
}

# Expects exit CODE and a stderr that contains TEXT. A server that accepted the bad value and
# serves is killed after 10 s (exit 137: a failure).
refused() {  # refused CODE TEXT WHAT ARGS...
  local want=$1 text=$2 what=$3 got
  shift 3
  timeout -s KILL 10 "$@" >"$scratch/out" 2>"$scratch/err" </dev/null
  got=$?
  [[ $got -eq $want ]] || fail "$what: exit $got, expected $want: $(head -c 300 "$scratch/err")"
  grep -qF -- "$text" "$scratch/err" || fail "$what: the message does not name $text: $(head -c 300 "$scratch/err")"
}

listed=$("$lockstepd" --help | grep -oE '^ +--[a-z-]+' | sed 's/^ *--//' | grep -vE '^(help|config)$')
for key in $listed; do
  [[ -n ${values[$key]+set} ]] || fail "lockstepd --help lists --$key, which this test does not check"
done
[[ $(wc -w <<<"$listed") -eq ${#values[@]} ]] || fail "this test checks settings --help does not list: ${!values[*]} vs $listed"

for key in "${!values[@]}"; do
  bad=${values[$key]%%|*}
  good=${values[$key]#*|}
  var=LOCKSTEP_$(tr 'a-z-' 'A-Z_' <<<"$key")
  toml_key=${key//-/_}
  data="$scratch/data-$key"
  code=2
  named_flag="--$key"
  named_key="\"$toml_key\""
  if [[ $key == data-dir ]]; then
    code=1  # not a usage error: the directory cannot be made
    named_flag="cannot open the data directory"
    named_key=$named_flag
  fi
  data_arg=(--data-dir "$data")
  [[ $key == data-dir ]] && data_arg=()
  if [[ $key == allow-remote ]]; then
    # A flag without a value: the bad value comes through the variable and the file only.
    refused 2 "$named_flag" "$var=$bad" env "$var=$bad" "$lockstepd" "${data_arg[@]}"
  else
    refused "$code" "$named_flag" "--$key $bad" "$lockstepd" "${data_arg[@]}" "--$key=$bad"
    refused "$code" "$named_flag" "$var=$bad" env "$var=$bad" "$lockstepd" "${data_arg[@]}"
  fi
  printf '%s = "%s"\n' "$toml_key" "$bad" >"$scratch/bad.toml"
  refused "$code" "$named_key" "config $toml_key = \"$bad\"" "$lockstepd" "${data_arg[@]}" --config "$scratch/bad.toml"
  printf '%s = %s\n' "$toml_key" "$good" >"$scratch/good.toml"
  # The listen key's good value must work alone: starts() then adds no --listen of its own.
  listen_arg=(--listen 127.0.0.1:0)
  [[ $key == listen ]] && listen_arg=()
  starts "${data_arg[@]}" --config "$scratch/good.toml" || fail "config $toml_key = $good did not start: $(head -c 300 "$scratch/err")"
  if [[ $key == metrics ]]; then
    grep -q "metrics listening on 127.0.0.1:" "$scratch/err" || fail "config metrics = $good started no metrics listener"
  fi
  listen_arg=(--listen 127.0.0.1:0)
done

# The example config (tools/deploy/lockstepd.toml) sets every key, and starts a server (its
# data directory and addresses overridden by flags, which win).
example=$(dirname "$0")/../../tools/deploy/lockstepd.toml
example_keys=$(grep -oE '^[a-z_]+ =' "$example" | sed 's/ =//' | tr '_' '-' | sort)
[[ $example_keys == "$(tr ' ' '\n' <<<"$listed" | sort)" ]] ||
  fail "tools/deploy/lockstepd.toml does not set exactly the settings --help lists: $(diff <(echo "$example_keys") <(tr ' ' '\n' <<<"$listed" | sort) | tr '\n' ' ')"
starts --data-dir "$scratch/data-example" --metrics 127.0.0.1:0 --config "$example" ||
  fail "the example config did not start: $(head -c 300 "$scratch/err")"

# The config file's own errors name the file and the line.
data="$scratch/data-config"
printf 'max_connections = 10\nno_such_key = 1\n' >"$scratch/c.toml"
refused 2 'unknown key "no_such_key" at line 2' "unknown key" "$lockstepd" --data-dir "$data" --config "$scratch/c.toml"
printf 'max_connections = [1, 2]\n' >"$scratch/c.toml"
refused 2 '"max_connections" at line 1: must be a string, a number or a boolean' "wrong type" "$lockstepd" --data-dir "$data" --config "$scratch/c.toml"
printf 'max_connections = \n' >"$scratch/c.toml"
refused 2 "line 1" "bad syntax" "$lockstepd" --data-dir "$data" --config "$scratch/c.toml"
refused 2 "$scratch/missing.toml" "missing file" "$lockstepd" --data-dir "$data" --config "$scratch/missing.toml"
refused 2 "--no-such-flag" "unknown flag" "$lockstepd" --no-such-flag
refused 2 "not a loopback address" "remote listen" "$lockstepd" --data-dir "$data" --listen 10.1.2.3:7070
refused 2 "--listen" "empty listen" "$lockstepd" --data-dir "$data" --listen ""
printf 'listen = ""\n' >"$scratch/c.toml"
refused 2 '"listen"' "empty listen in the config" "$lockstepd" --data-dir "$data" --config "$scratch/c.toml"
refused 2 "is above --group-max-session-timeout-ms" "group session bounds crossed" "$lockstepd" --data-dir "$data" --group-min-session-timeout-ms 5000 --group-max-session-timeout-ms 1000
refused 2 "not a loopback address" "remote metrics" "$lockstepd" --data-dir "$data" --metrics 10.1.2.3:9464

# Precedence: a flag beats a variable, a variable beats the file, the file beats the default.
printf 'io_threads = 0\n' >"$scratch/c.toml"
LOCKSTEP_IO_THREADS=2 starts --data-dir "$data" --config "$scratch/c.toml" || fail "a variable did not beat the config file: $(head -c 300 "$scratch/err")"
LOCKSTEP_IO_THREADS=0 starts --data-dir "$data" --io-threads 2 || fail "a flag did not beat a variable: $(head -c 300 "$scratch/err")"
refused 2 "io_threads" "the config file beats the default" "$lockstepd" --data-dir "$data" --config "$scratch/c.toml"
LOCKSTEP_CONFIG="$scratch/c.toml" refused 2 "io_threads" "LOCKSTEP_CONFIG names the file" "$lockstepd" --data-dir "$data"

# Structured logs: every stderr line is one logfmt record, also when the message quotes
# something with a quote, a backslash and a tab in it (here the data directory's name).
odd="$scratch/da\"ta\\di"$'\t'"r"
if starts --data-dir "$odd"; then
  grep -qF 'msg="opening '"$scratch"'/da\"ta\\di\tr"' "$scratch/err" ||
    fail "the data directory's name is not escaped in the log: $(head -c 500 "$scratch/err")"
  bad=$(grep -vE '^ts=[0-9T:.-]+ level=[a-z]+ msg="([^"\\[:cntrl:]]|\\.)*"$' "$scratch/err" | head -n 3)
  [[ -z $bad ]] || fail "log lines that are not logfmt records: $bad"
else
  fail "lockstepd did not start on a data directory with a quote in its name: $(head -c 300 "$scratch/err")"
fi

# The metrics listener of a real lockstepd: its port is in the log; /readyz is 200 once it
# serves, and /metrics reports the durable LSN.
http_get() {  # http_get PORT PATH: the whole HTTP/1.0 answer
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  timeout 10 cat <&3
  exec 3<&-
}
"$lockstepd" --data-dir "$scratch/data-metrics" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 >"$scratch/out" 2>"$scratch/err" &
pid=$!
for _ in $(seq 100); do [[ -s $scratch/out ]] && break; sleep 0.1; done
port=$(grep -oE 'metrics listening on 127\.0\.0\.1:[0-9]+' "$scratch/err" | grep -oE '[0-9]+$')
if [[ -z $port ]]; then
  fail "no metrics port in the log: $(head -c 500 "$scratch/err")"
else
  ready=$(http_get "$port" /readyz)
  [[ $ready == "HTTP/1.0 200 OK"* && $ready == *ready ]] || fail "/readyz: $ready"
  metrics=$(http_get "$port" /metrics)
  grep -qE '^lockstep_durable_lsn [0-9]+' <<<"$metrics" || fail "/metrics has no durable LSN: ${metrics:0:500}"
  [[ $(head -n 1 "$scratch/out") == "listening on 127.0.0.1:"* ]] || fail "stdout is not the one listening line"
fi
kill -TERM "$pid"
wait "$pid" || fail "lockstepd with --metrics did not stop cleanly"

exit $status
