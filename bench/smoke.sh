#!/usr/bin/env bash
# A bounded check that the harness and the server work together: every scenario for about two
# seconds against a real `arqonbus serve`, and against nats-server where it is installed.
# Rates are moderate, so any pulse lost without the server announcing it is a failure.
# Total time stays under two minutes (each run is capped by `timeout`); both servers are
# stopped on exit. Exit status: 0 when every run passed, 1 otherwise.
#
# ARQONBUS_BIN picks the server (default target/release/arqonbus); SMOKE_OUT keeps the results
# (default: a temporary directory, removed at the end).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ARQ_BIN=$(find_arqonbus)
NATS_BIN=$(find_nats)
BENCH=$(find_bench)
new_work smoke
OUT=${SMOKE_OUT:-$WORK/results}
mkdir -p "$OUT"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
SECONDS=0
FAILED=0
PASSED=0

APORT=$(free_port)
start_arqonbus "$ARQ_BIN" "$APORT" "$WORK" "$WORK/arqonbus.log"
TARGETS=("arqonbus://127.0.0.1:$APORT $ARQ_PID")
if [[ -n $NATS_BIN ]]; then
  NPORT=$(free_port)
  start_nats "$NATS_BIN" "$NPORT" "$WORK" "$WORK/nats.log"
  TARGETS+=("nats://127.0.0.1:$NPORT $NATS_PID")
else
  echo "nats-server not installed: ArqonBus only"
fi

# check NAME ARGS...: one bounded run; prints its table on failure.
check() {
  local name=$1 url=$2 pid=$3
  shift 3
  local rc=0 log="$WORK/run.log"
  timeout --kill-after=5 25 "$BENCH" "$@" --target "$url" --server-pid "$pid" --out "$OUT" \
    --no-progress >"$log" 2>&1 || rc=$?
  if ((rc == 0)) && grep -q "UNSUPPORTED" "$log" && [[ $url == arqonbus://* ]]; then
    # start_arqonbus configures every scenario ArqonBus has; unsupported there is a failure.
    echo "FAIL  $name on $url (unsupported: $(grep -m1 'unsupported:' "$log" | sed 's/^- unsupported: //'))"
    FAILED=$((FAILED + 1))
  elif ((rc == 0)) && grep -q "UNSUPPORTED" "$log"; then
    echo "ok    $name on $url (unsupported: $(grep -m1 'unsupported:' "$log" | sed 's/^- unsupported: //'))"
    PASSED=$((PASSED + 1))
  elif ((rc == 0)); then
    echo "ok    $name on $url"
    PASSED=$((PASSED + 1))
  else
    echo "FAIL  $name on $url (exit $rc)"
    sed 's/^/      /' "$log"
    FAILED=$((FAILED + 1))
  fi
}

for t in "${TARGETS[@]}"; do
  url=${t% *}
  pid=${t#* }
  check throughput "$url" "$pid" throughput -p 1 -s 1 --rate 20000 --duration 2 --drain-timeout 3 --fail-on-loss
  check fanout "$url" "$pid" fanout -s 4 --rate 10000 --duration 2 --drain-timeout 3 --fail-on-loss
  check latency "$url" "$pid" latency --rate 5000 --duration 2 --warmup 0.5 --drain-timeout 3 --fail-on-loss
  check conns "$url" "$pid" conns --conns 500 --hold 1 --settle 0.2
  check durable "$url" "$pid" durable --reality bench-sync-always --duration 2 --inflight 32
  check durable "$url" "$pid" durable --reality bench-sync-os --duration 2 --inflight 32
  check spectral "$url" "$pid" spectral --agents 20 --duration 1.5 --warmup 0.5 \
    --background-rate 5000 --drain-timeout 3 --fail-on-loss
  check filters "$url" "$pid" filters --subscriptions 200 --connections 4 --rate 200 \
    --duration 1.5 --warmup 0.3 --drain-timeout 3
  if [[ $url == nats://* ]] || arqonbus_has_params "$ARQ_BIN"; then
    check params "$url" "$pid" params --sessions 1000 --repeats 3 --deliver-timeout 5
  else
    echo "skip  params on $url (this arqonbus has no sys.control.param.set)"
  fi
  if [[ $url == nats://* ]] || ((ARQ_HAS_DELTA)); then
    check delta "$url" "$pid" delta --steps 2000 --rate 4000 --subscribers 2 --drain-timeout 3
  else
    echo "skip  delta on $url (this arqonbus refuses the [[delta]] configuration)"
  fi
  if [[ $url == nats://* ]] || arqonbus_has_strict_types "$ARQ_BIN"; then
    check types "$url" "$pid" types --rounds 3 --duration 0.5 --rate 5000 --drain-timeout 3
  else
    echo "skip  types on $url (this arqonbus has no SAM strict mode)"
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "FAIL  the server behind $url died"
    FAILED=$((FAILED + 1))
  fi
done

if ! timeout 20 "$BENCH" summarize "$OUT" >"$WORK/summary.log" 2>&1; then
  echo "FAIL  summarize"
  cat "$WORK/summary.log"
  FAILED=$((FAILED + 1))
fi

echo "smoke took ${SECONDS}s"
echo "smoke: $PASSED passed, $FAILED failed"
((FAILED == 0))
