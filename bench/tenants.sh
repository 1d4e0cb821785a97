#!/usr/bin/env bash
# Tenant isolation (issue 25): one server of 2 shards that requires signed tokens, tenant A with a
# publish quota, tenant B without. `arqonbus-bench tenants` runs B's open-loop latency probe on
# both shards through the whole run, with A idle, then flooding — publishes, history reads,
# policy-heavy pulses (a policy that burns all its fuel), connection churn — each flood followed
# by an idle phase. It prints B's p50/p99/p99.9 per phase and shard, the p99 over the quiet p99
# and PASS/MISS against the 1.5x target.
#
# The script makes a signing key, writes the server's configuration (tokens required, the two
# tenants, a retained reality family for the history flood, a controller token), starts the
# server, issues A's and B's tokens, pre-fills the history realities, loads the fuel-burning
# policy (tests/fixtures/policy/infinite_loop.wat), runs the scenario and stops the server.
#
# Knobs (environment):
#   ARQONBUS_BIN, BENCH_BIN  the binaries (target/release/arqonbus, target/release/arqonbus-bench)
#   DURATION (10)            seconds per phase; FLOODS (publish,history,policy,churn)
#   PROBE_RATE (5000)        B's pulses/s per shard; FLOOD_CONNECTIONS (4) A's per shard
#   A_QUOTA (40000)          A's publish_pulses_per_sec (split over the 2 shards)
#   HISTORY_PULSES (20000)   pulses pre-filled into each history reality
#   FLOOD_NICE (0)           nice value of the harness's flooding threads
#   FAIL_OVER                exit 1 when a flood's B p99 is over this many times the quiet p99
#   QUEUES (1)               1: write the per-tenant scheduling keys, A `shares = A_SHARES` (100),
#                            B `shares = B_SHARES` (100) and `class = B_CLASS` ("latency"),
#                            and A's quotas that came with them: `policy_fuel_per_sec = A_FUEL`
#                            (20000000: 10 calls of the default 1,000,000 fuel a second per
#                            shard) and `max_history_reads_per_shard = A_HISTORY_READS` (4);
#                            0: write none of them (a server without per-tenant queues refuses them)
#   OUT                      results directory (default: a temporary one, removed on exit)
#   LABEL (tenants-queues$QUEUES)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
PROBE_RATE=${PROBE_RATE:-5000}
FLOODS=${FLOODS:-publish,history,policy,churn}
A_QUOTA=${A_QUOTA:-40000}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-4}
HISTORY_PULSES=${HISTORY_PULSES:-20000}
FLOOD_NICE=${FLOOD_NICE:-0}
FAIL_OVER=${FAIL_OVER:-}
QUEUES=${QUEUES:-1}
A_SHARES=${A_SHARES:-100}
A_FUEL=${A_FUEL:-20000000}
A_HISTORY_READS=${A_HISTORY_READS:-4}
B_SHARES=${B_SHARES:-100}
B_CLASS=${B_CLASS:-latency}
LABEL=${LABEL:-tenants-queues$QUEUES}
SHARDS=2

ARQ_BIN=$(find_arqonbus)
BENCH=$(find_bench)
new_work tenants
KEEP_OUT=${OUT:+1}
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
# Churn opens connections as fast as it can; the server and the harness get the hard limit.
ulimit -n "$(ulimit -Hn)"

# The history flood reads these; each shard's readers read the ones it owns (with 2 shards,
# four names cover both owners; the harness reports which shard owns which).
HISTORY_REALITIES=tenant-a-hist-0,tenant-a-hist-1,tenant-a-hist-2,tenant-a-hist-3
POLICY_REALITY=tenant-a-policy

PUBKEY=$("$ARQ_BIN" token keygen --out "$WORK/signing.key" 2>/dev/null)
# A static controller token (control.controller_tokens) loads the policy.
CONTROLLER=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

if [[ $QUEUES == 1 ]]; then
  A_SCHED="shares = $A_SHARES
policy_fuel_per_sec = $A_FUEL
max_history_reads_per_shard = $A_HISTORY_READS"
  B_SCHED="shares = $B_SHARES
class = \"$B_CLASS\""
else
  A_SCHED=""
  B_SCHED=""
fi
cat >"$WORK/arqonbus.toml" <<TOML
[auth]
require_token = true
trusted_keys = ["$PUBKEY"]

[control]
controller_tokens = ["$CONTROLLER"]

# The history flood's realities: retained, small segments, bounded.
[[retention]]
realities = "tenant-a-hist-*"
sync = "os"
max_bytes = 268435456
segment_bytes = 16777216

[[tenants]]
name = "tenant-a"
max_connections = 256
publish_pulses_per_sec = $A_QUOTA
$A_SCHED

[[tenants]]
name = "tenant-b"
$B_SCHED
TOML
if ! "$ARQ_BIN" config --check "$WORK/arqonbus.toml" >"$WORK/check.log" 2>&1; then
  cat "$WORK/check.log" >&2
  if [[ $QUEUES == 1 ]]; then
    echo "tenants.sh: $ARQ_BIN refuses the per-tenant scheduling keys (shares, class); run with QUEUES=0 against a server without them" >&2
  fi
  exit 2
fi

PORT=$(free_port)
start_arqonbus "$ARQ_BIN" "$PORT" "$WORK" "$OUT/server.log" "$WORK/arqonbus.toml"
SERVER=127.0.0.1:$PORT
ADMIN=""
for _ in $(seq 100); do
  ADMIN=$(grep -o 'admin endpoint up.*addr=[0-9.:]*' "$OUT/server.log" | grep -o '[0-9.]*:[0-9]*$' | tail -1 || true)
  if [[ -n $ADMIN ]] && curl -sf "http://$ADMIN/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
if [[ -z $ADMIN ]] || ! curl -sf "http://$ADMIN/healthz" >/dev/null 2>&1; then
  echo "tenants.sh: the server's /healthz did not answer; its log:" >&2
  tail -20 "$OUT/server.log" >&2
  exit 1
fi

# Tokens outlive the run: every phase, the warm-up, and the set-up around them.
IFS=, read -r -a FLOOD_LIST <<<"$FLOODS"
TTL=$(((2 * ${#FLOOD_LIST[@]} + 1) * ${DURATION%.*} + 3600))
issue() { # tenant subject grant [role]
  "$ARQ_BIN" token issue --key "$WORK/signing.key" --tenant "$1" --subject "$2" \
    --role "${4:-publisher,subscriber}" --publish "$3" --subscribe "$3" --ttl "$TTL" 2>/dev/null
}
TOKEN_A=$(issue tenant-a flood 'tenant-a-*:>')
TOKEN_B=$(issue tenant-b probe 'tenant-b-*:>')

if [[ ,$FLOODS, == *,history,* ]]; then
  # Pre-filled by a tenant of its own, so A's publish quota does not refuse any of it.
  TOKEN_FILL=$(issue tenant-fill fill 'tenant-a-hist-*:>' publisher)
  head -c 256 /dev/zero | tr '\0' h >"$WORK/fill.bin"
  IFS=, read -r -a HISTS <<<"$HISTORY_REALITIES"
  for r in "${HISTS[@]}"; do
    "$ARQ_BIN" pub --server "$SERVER" --token "$TOKEN_FILL" --reality "$r" \
      --topic bench.history.fill --file "$WORK/fill.bin" --count "$HISTORY_PULSES" >/dev/null
  done
fi
if [[ ,$FLOODS, == *,policy,* ]]; then
  # Every pulse to the policy reality runs a module that loops until its fuel is gone
  # (fuel_per_call: the server's default) and is refused with POLICY_FAULT.
  "$ARQ_BIN" policy --server "$SERVER" --token "$CONTROLLER" load --name tenant-a-burn \
    --wasm "$BENCH_ROOT/tests/fixtures/policy/infinite_loop.wat" --bind "$POLICY_REALITY*:>" >/dev/null
fi

echo "tenants.sh: $ARQ_BIN on $SERVER (2 shards), A's quota $A_QUOTA pulses/s, QUEUES=$QUEUES" >&2
rc=0
"$BENCH" tenants --target "arqonbus://$SERVER" --server-pid "$ARQ_PID" \
  --token-a "$TOKEN_A" --token-b "$TOKEN_B" --shards "$SHARDS" --probe-rate "$PROBE_RATE" \
  --flood-connections "$FLOOD_CONNECTIONS" --floods "$FLOODS" --duration "$DURATION" \
  --history-reality "$HISTORY_REALITIES" --policy-reality "$POLICY_REALITY" \
  --flood-nice "$FLOOD_NICE" ${FAIL_OVER:+--fail-over "$FAIL_OVER"} \
  --label "$LABEL" --out "$OUT" --no-progress || rc=$?

# What the server counted, for the notes of a report (all of it in $OUT/metrics.txt).
curl -s "http://$ADMIN/metrics" >"$OUT/metrics.txt" 2>/dev/null || true
grep -E '^arqonbus_(quota_exceeded|policy_faults|auth_failures|connections_refused|request_errors|pulses_shed|slow_consumer|tenant_throttles)[a-z_]*(\{[^}]*\})? ' \
  "$OUT/metrics.txt" | sed 's/^/server: /' >&2 || true
if [[ -n $KEEP_OUT ]]; then
  echo "tenants.sh: results in $OUT" >&2
fi
exit "$rc"
