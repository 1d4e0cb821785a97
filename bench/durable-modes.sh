#!/usr/bin/env bash
# Acked publishes per second by durability: one server, four realities that differ only in
# retention — ephemeral (no rule), `sync = "os"` (an ack means the kernel has the record),
# `sync = "interval"` (flushed every 100 ms; an ack means the kernel has it) and
# `sync = "always"` (an ack means fdatasync done, group-committed) — each published to with
# acks by 1 publisher and by 8 (each on its own connection, all into the one reality), 1 KiB
# payloads. Rounds alternate the order. Prints one line per run, then the medians with the
# flush figures the server exposes (flushes, pulses per flush, mean sync time).
#
# Knobs: ARQONBUS_BIN, BENCH_BIN, DURATION (5), PAYLOAD (1024), ROUNDS (3), INFLIGHT (in flight
# per publisher, 256), SHAPES ("1 8": publisher counts), OUT (results dir, default temporary).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
PAYLOAD=${PAYLOAD:-1024}
ROUNDS=${ROUNDS:-3}
INFLIGHT=${INFLIGHT:-256}
read -r -a SHAPES <<<"${SHAPES:-1 8}"
ARQ_BIN=$(find_arqonbus)
BENCH=$(find_bench)
new_work durable
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"

cat >"$WORK/arqonbus.toml" <<'TOML'
admin_listen = "127.0.0.1:0"
[[retention]]
realities = "bench-sync-always*"
sync = "always"
max_bytes = 4294967296
[[retention]]
realities = "bench-sync-interval*"
sync = "interval"
sync_interval_ms = 100
max_bytes = 4294967296
[[retention]]
realities = "bench-sync-os*"
sync = "os"
max_bytes = 4294967296
TOML
PORT=$(free_port)
# Two shards, and every publisher on the shard its reality's owner is not (--cross-shard 2):
# otherwise a reality's name decides whether a run has one core or two.
start_arqonbus "$ARQ_BIN" "$PORT" "$WORK" "$WORK/server.log" "$WORK/arqonbus.toml"
ADMIN=$(grep -o 'admin endpoint up[^\n]*addr=[0-9.:]*' "$WORK/server.log" | grep -o '[0-9.]*:[0-9]*$' | tail -1)

MODES=(ephemeral os interval always)

# median NUMBERS...: the middle one (the lower middle of an even count).
median() {
  printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

# cell LOG METRIC: the value of the first table row of the run's Markdown output named METRIC.
cell() {
  awk -F'|' -v m="$2" 'index($2, " " m " ") == 1 {gsub(/[ ,]/, "", $3); print $3; exit}' "$1"
}

# metric NAME: a counter from the server's /metrics.
metric() {
  curl -s "http://$ADMIN/metrics" 2>/dev/null | awk -v n="$1" '$1 == n {print $2}'
}

declare -A RATES FLUSHES
run=0
for round in $(seq "$ROUNDS"); do
  order=("${MODES[@]}")
  # Rotate the order each round, so no mode always runs first (or on a warmer machine).
  for _ in $(seq $(((round - 1) % ${#MODES[@]}))); do order=("${order[@]:1}" "${order[0]}"); done
  for mode in "${order[@]}"; do
    for p in "${SHAPES[@]}"; do
      run=$((run + 1))
      # A fresh reality per run, so no run appends to a log another one grew.
      reality="bench-sync-$mode-$run"
      extra=()
      if [[ $mode == ephemeral ]]; then
        reality="bench-ephemeral-$run"
        extra=(--skip-retention-check)
      fi
      f0=$(metric arqonbus_storage_flushes_total)
      n0=$(metric arqonbus_storage_flushed_pulses_total)
      s0=$(metric arqonbus_storage_flush_seconds_sum)
      log=$WORK/run.log
      "$BENCH" durable --target "arqonbus://127.0.0.1:$PORT" --server-pid "$ARQ_PID" \
        --cross-shard 2 --reality "$reality" "${extra[@]}" --publishers "$p" --inflight "$INFLIGHT" \
        --duration "$DURATION" --payload-bytes "$PAYLOAD" --out "$OUT" --no-progress \
        >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
      f1=$(metric arqonbus_storage_flushes_total)
      n1=$(metric arqonbus_storage_flushed_pulses_total)
      s1=$(metric arqonbus_storage_flush_seconds_sum)
      rate=$(cell "$log" "acked publishes/s")
      flush=$(awk -v f="${f1:-0}" -v g="${f0:-0}" -v n="${n1:-0}" -v m="${n0:-0}" \
        -v s="${s1:-0}" -v t="${s0:-0}" 'BEGIN {
          d = f - g; if (d <= 0) { print "-"; exit }
          printf "%d flushes, %.0f pulses each, %.2f ms", d, (n - m) / d, (s - t) * 1000 / d }')
      printf 'round %d  %-9s  %d publisher(s)  acked %9s/s  (%s)\n' \
        "$round" "$mode" "$p" "$rate" "$flush"
      RATES[$mode.$p]+="$rate "
      FLUSHES[$mode.$p]=$flush
    done
  done
done

echo
echo "| reality | publishers × in flight | acked pulses/s (median of $ROUNDS) | vs ephemeral | last run's flushes |"
echo "| --- | --- | ---: | ---: | --- |"
for p in "${SHAPES[@]}"; do
  # shellcheck disable=SC2086 # RATES holds space-separated numbers
  base=$(median ${RATES[ephemeral.$p]})
  for mode in "${MODES[@]}"; do
    # shellcheck disable=SC2086
    med=$(median ${RATES[$mode.$p]})
    awk -v m="$mode" -v p="$p" -v i="$INFLIGHT" -v v="$med" -v b="$base" -v f="${FLUSHES[$mode.$p]}" \
      'BEGIN {printf "| %s | %d × %d | %d | %.2f | %s |\n", m, p, i, v, v / b, f}'
  done
done
