#!/usr/bin/env bash
# What durability costs: one publisher to one subscriber, 1 KiB pulses, as fast as the bus takes
# them, against three servers started side by side that differ only in retention — ephemeral
# (no rule), `sync = "os"` (every record written to its memory-mapped segment; an ack means the
# kernel has it) and `sync = "always"` (an ack means fdatasync done, group-committed). Rounds
# alternate the order. Prints one line per run and the median per mode.
#
# Knobs: ARQONBUS_BIN, BENCH_BIN, DURATION (10), PAYLOAD (1024), ROUNDS (3), OUT (results dir,
# default a temporary one).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
PAYLOAD=${PAYLOAD:-1024}
ROUNDS=${ROUNDS:-3}
ARQ_BIN=$(find_arqonbus)
BENCH=$(find_bench)
WORK=$(mktemp -d /tmp/arqonbus-sync.XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
cleanup() {
  stop_servers
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MODES=(ephemeral os always)
declare -A PORT PID
for mode in "${MODES[@]}"; do
  dir=$WORK/$mode
  mkdir -p "$dir"
  if [[ $mode != ephemeral ]]; then
    printf '[[retention]]\nrealities = "*"\nsync = "%s"\nmax_bytes = 2147483648\n' "$mode" \
      >"$dir/arqonbus.toml"
  else
    : >"$dir/arqonbus.toml"
  fi
  PORT[$mode]=$(free_port)
  "$ARQ_BIN" serve --config "$dir/arqonbus.toml" --listen "127.0.0.1:${PORT[$mode]}" \
    --shards 2 --admin-listen off --data-dir "$dir/data" >"$dir/server.log" 2>&1 &
  PID[$mode]=$!
  SERVER_PIDS+=("${PID[$mode]}")
  wait_port "${PORT[$mode]}" 15 || { tail -20 "$dir/server.log" >&2; exit 1; }
done

declare -A RATES
for round in $(seq "$ROUNDS"); do
  order=("${MODES[@]}")
  # Rotate the order each round, so no mode always runs first (or on a warmer machine).
  for _ in $(seq $(((round - 1) % ${#MODES[@]}))); do order=("${order[@]:1}" "${order[0]}"); done
  for mode in "${order[@]}"; do
    log=$WORK/run.log
    "$BENCH" throughput -p 1 -s 1 --duration "$DURATION" --payload-bytes "$PAYLOAD" \
      --target "arqonbus://127.0.0.1:${PORT[$mode]}" --server-pid "${PID[$mode]}" \
      --label "sync-$mode" --out "$OUT" --no-progress >"$log" 2>&1
    pub=$(awk -F'|' '$2 ~ /^ publish msgs\/s / {gsub(/[ ,]/, "", $3); print $3; exit}' "$log")
    del=$(awk -F'|' '$2 ~ /^ deliveries\/s / {gsub(/[ ,]/, "", $3); print $3; exit}' "$log")
    lost=$(awk -F'|' '$2 ~ /^ lost/ {gsub(/[ ,]/, "", $3); print $3; exit}' "$log")
    printf 'round %d  %-9s  published %9s/s  delivered %9s/s  lost %s\n' \
      "$round" "$mode" "$pub" "$del" "${lost:-?}"
    RATES[$mode]+="$del "
  done
done

echo
echo "| reality | delivered pulses/s (median of $ROUNDS) | vs ephemeral |"
echo "| --- | ---: | ---: |"
base=$(tr ' ' '\n' <<<"${RATES[ephemeral]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
for mode in "${MODES[@]}"; do
  med=$(tr ' ' '\n' <<<"${RATES[$mode]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  awk -v m="$mode" -v v="$med" -v b="$base" 'BEGIN {printf "| %s | %d | %.2f |\n", m, v, v / b}'
done
