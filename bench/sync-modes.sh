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
new_work sync
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"

MODES=(ephemeral os always)
declare -A PORT PID
for mode in "${MODES[@]}"; do
  dir=$WORK/$mode
  mkdir -p "$dir"
  if [[ $mode == ephemeral ]]; then
    : >"$dir/arqonbus.toml"
  else
    printf '[[retention]]\nrealities = "*"\nsync = "%s"\nmax_bytes = 2147483648\n' "$mode" \
      >"$dir/arqonbus.toml"
  fi
  PORT[$mode]=$(free_port)
  start_arqonbus "$ARQ_BIN" "${PORT[$mode]}" "$dir" "$dir/server.log" "$dir/arqonbus.toml"
  PID[$mode]=$ARQ_PID
done

# median NUMBERS...: the middle one (the lower middle of an even count).
median() {
  printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

# cell LOG METRIC: the value of the first table row of the run's Markdown output named METRIC.
cell() {
  awk -F'|' -v m="$2" 'index($2, " " m " ") == 1 {gsub(/[ ,]/, "", $3); print $3; exit}' "$1"
}

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
    pub=$(cell "$log" "publish msgs/s")
    del=$(cell "$log" "deliveries/s")
    lost=$(cell "$log" "lost")
    printf 'round %d  %-9s  published %9s/s  delivered %9s/s  lost %s\n' \
      "$round" "$mode" "$pub" "$del" "${lost:-?}"
    RATES[$mode]+="$del "
  done
done

echo
echo "| reality | delivered pulses/s (median of $ROUNDS) | vs ephemeral |"
echo "| --- | ---: | ---: |"
# shellcheck disable=SC2086 # RATES holds space-separated numbers
base=$(median ${RATES[ephemeral]})
for mode in "${MODES[@]}"; do
  # shellcheck disable=SC2086
  med=$(median ${RATES[$mode]})
  awk -v m="$mode" -v v="$med" -v b="$base" 'BEGIN {printf "| %s | %d | %.2f |\n", m, v, v / b}'
done
