#!/usr/bin/env bash
# ArqonBus against NATS on this machine: starts nats-server (JetStream, file store) and
# `arqonbus serve --shards 2` on free loopback ports, runs every scenario against both,
# alternating which goes first, and writes everything to perf/results/<timestamp>/ with a
# summary.md of ArqonBus/NATS ratios. Both servers are stopped on exit, however it exits.
#
# Knobs (environment):
#   ARQONBUS_BIN   server binary (default target/release/arqonbus)
#   NATS_SERVER_BIN nats-server binary (default: PATH, then /usr/sbin/nats-server)
#   BENCH_BIN      harness binary (default target/release/arqonbus-bench, built if missing)
#   OUT            results directory (default perf/results/<UTC timestamp>)
#   DURATION       seconds per run (10)         PAYLOAD  payload bytes (1024)
#   RATES          latency rates ("10000 50000") FANOUT_SUBS subscribers for fanout (4)
#   CONNS          idle connections (20000; capped by the open-file limit, and said so)
#   ROUNDS         repeats of the whole set (1); summary.md reports medians
#   SCENARIOS      subset to run ("throughput fanout latency conns durable")
#   QUIET_WAIT     seconds to wait for other work on the machine to stop first (0: don't wait)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
PAYLOAD=${PAYLOAD:-1024}
RATES=${RATES:-"10000 50000"}
FANOUT_SUBS=${FANOUT_SUBS:-4}
CONNS=${CONNS:-20000}
ROUNDS=${ROUNDS:-1}
SCENARIOS=${SCENARIOS:-"throughput fanout latency conns durable"}
QUIET_WAIT=${QUIET_WAIT:-0}

ARQ_BIN=$(find_arqonbus)
NATS_BIN=$(find_nats)
if [[ -z $NATS_BIN ]]; then
  echo "nats-server not found (apt-get install nats-server, or set NATS_SERVER_BIN)" >&2
  exit 1
fi
BENCH=$(find_bench)
OUT=${OUT:-$BENCH_ROOT/perf/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
new_work compare

# Both servers and the harness get the hard open-file limit (the conns scenario needs it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if ((QUIET_WAIT > 0)); then
  wait_quiet "$QUIET_WAIT" || true
fi
BUSY_BEFORE=$(busy_cores 3)

APORT=$(free_port)
start_arqonbus "$ARQ_BIN" "$APORT" "$WORK" "$OUT/arqonbus-server.log"
NPORT=$(free_port)
start_nats "$NATS_BIN" "$NPORT" "$WORK" "$OUT/nats-server.log"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
  echo "arqonbus: $("$ARQ_BIN" --version 2>/dev/null || echo '?') ($ARQ_BIN), serve --shards 2 on 127.0.0.1:$APORT, pid $ARQ_PID"
  echo "nats-server: $("$NATS_BIN" --version 2>/dev/null || echo '?'), -js -sd (file store) on 127.0.0.1:$NPORT, pid $NATS_PID"
  echo "commit: $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "open-file limit: soft $(ulimit -Sn), hard $(ulimit -Hn)"
  echo "cores busy before the servers started: $BUSY_BEFORE (each run's own CPU line shows other processes during it)"
  echo "knobs: DURATION=$DURATION PAYLOAD=$PAYLOAD RATES=\"$RATES\" FANOUT_SUBS=$FANOUT_SUBS CONNS=$CONNS ROUNDS=$ROUNDS"
} >"$OUT/environment.txt"
cat "$OUT/environment.txt"

FAILURES=()
TURN=0

# bench SCENARIO ARGS...: runs SCENARIO against both servers, the first target alternating.
bench() {
  local scenario=$1
  shift
  local targets=("arqonbus://127.0.0.1:$APORT $ARQ_PID" "nats://127.0.0.1:$NPORT $NATS_PID")
  if ((TURN % 2 == 1)); then
    targets=("${targets[1]}" "${targets[0]}")
  fi
  TURN=$((TURN + 1))
  local t url pid rc
  for t in "${targets[@]}"; do
    url=${t% *}
    pid=${t#* }
    echo "== $scenario $* -> $url" >&2
    rc=0
    "$BENCH" "$scenario" --target "$url" --server-pid "$pid" --out "$OUT" --no-progress "$@" \
      >>"$OUT/runs.log" 2>&1 || rc=$?
    if ((rc != 0)); then
      FAILURES+=("$scenario $* on $url (exit $rc)")
      echo "   failed with exit $rc (see runs.log)" >&2
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the server behind $url died; its log is in $OUT" >&2
      exit 1
    fi
    sleep 1
  done
}

for round in $(seq "$ROUNDS"); do
  echo "-- round $round of $ROUNDS" >&2
  for s in $SCENARIOS; do
    case $s in
      throughput) bench throughput -p 1 -s 1 --duration "$DURATION" --payload-bytes "$PAYLOAD" ;;
      fanout) bench fanout -s "$FANOUT_SUBS" --duration "$DURATION" --payload-bytes "$PAYLOAD" ;;
      latency)
        for r in $RATES; do
          bench latency --rate "$r" --duration "$DURATION" --payload-bytes "$PAYLOAD"
        done
        ;;
      conns) bench conns --conns "$CONNS" ;;
      durable)
        # NATS has one durable mode (JetStream file storage); it runs under both labels.
        for mode in always os; do
          bench durable --reality "bench-sync-$mode" --duration "$DURATION" --payload-bytes "$PAYLOAD"
        done
        ;;
      *) echo "unknown scenario $s" >&2; exit 2 ;;
    esac
  done
done

"$BENCH" summarize "$OUT" >/dev/null
if ((${#FAILURES[@]} > 0)); then
  {
    echo
    echo "## Runs that failed"
    echo
    for f in "${FAILURES[@]}"; do echo "- $f"; done
  } >>"$OUT/summary.md"
fi
# The comparison table (up to the per-run details).
sed -n '1,/^## Runs/p' "$OUT/summary.md" | sed '$d'
echo "results: $OUT"
((${#FAILURES[@]} == 0))
