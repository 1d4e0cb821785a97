# Shared by compare.sh and smoke.sh: finding binaries, free loopback ports, starting and stopping
# the two servers. Sourced, not run.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The arqonbus server: $ARQONBUS_BIN, else target/release/arqonbus.
find_arqonbus() {
  local bin=${ARQONBUS_BIN:-$BENCH_ROOT/target/release/arqonbus}
  if [[ ! -x $bin ]]; then
    echo "arqonbus binary not found at $bin (set ARQONBUS_BIN or run: cargo build --release -p arqonbus)" >&2
    return 1
  fi
  # Absolute, because the servers are started from their own working directories.
  realpath "$bin"
}

# nats-server on PATH or at /usr/sbin/nats-server (Debian package nats-server); empty if absent.
find_nats() {
  if [[ -n ${NATS_SERVER_BIN:-} ]]; then realpath "$NATS_SERVER_BIN"; return; fi
  command -v nats-server 2>/dev/null && return
  [[ -x /usr/sbin/nats-server ]] && echo /usr/sbin/nats-server
  return 0
}

# The harness: $BENCH_BIN, else target/release/arqonbus-bench, built if missing.
find_bench() {
  local bin=${BENCH_BIN:-$BENCH_ROOT/target/release/arqonbus-bench}
  if [[ ! -x $bin ]]; then
    echo "building arqonbus-bench ..." >&2
    (cd "$BENCH_ROOT" && cargo build -q -p arqonbus-bench --release) >&2 || return 1
  fi
  realpath "$bin"
}

# A TCP port on 127.0.0.1 that nothing listens on, below the kernel's ephemeral range: a run
# that opens many connections (conns, the tenants churn) leaves their ports in TIME_WAIT for a
# minute, and a server cannot bind one of those.
free_port() {
  local p low=32768 lo=20000 span
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  span=$((low - lo))
  if ((span < 1000)); then
    # An ephemeral range that starts this low leaves no room below it: take the old chances.
    span=40000
  fi
  for _ in $(seq 100); do
    p=$((lo + RANDOM % span))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "no free loopback port found" >&2
  return 1
}

# Waits up to $2 seconds for something to listen on 127.0.0.1:$1.
wait_port() {
  local port=$1 secs=${2:-10}
  for _ in $(seq $((secs * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$port after ${secs}s" >&2
  return 1
}

SERVER_PIDS=()
# Set by start_arqonbus when the server took the harness's [[delta]] rule.
ARQ_HAS_DELTA=0

# Whether the arqonbus binary $1 handles reality parameters (sys.control.param.set).
arqonbus_has_params() {
  grep -aq 'sys.control.param.set' "$1"
}

# Whether the arqonbus binary $1 has SAM strict mode (manifests with a descriptor set).
arqonbus_has_strict_types() {
  grep -aq 'manifest.descriptor_set' "$1"
}

# new_work NAME: sets WORK to a fresh temporary directory; on exit, however it comes, the
# servers started here are stopped and WORK is removed.
new_work() {
  WORK=$(mktemp -d "/tmp/arqonbus-$1.XXXXXX")
  trap 'stop_servers; rm -rf "$WORK"' EXIT
  trap 'exit 130' INT TERM
}

# The Hello token of the harness's controller session (`arqonbus-bench params`'s default).
BENCH_CONTROLLER_TOKEN=arqonbus-bench-controller-token

# start_arqonbus BIN PORT WORKDIR LOG [CONFIG]: starts `arqonbus serve` on loopback, sets
# ARQ_PID. Without CONFIG the server gets the harness's configuration (below): retention rules
# for `durable` and a controller token for `params`.
start_arqonbus() {
  local bin=$1 port=$2 dir=$3 log=$4 config=${5:-}
  # The admin listener (default 127.0.0.1:4721) takes a free port, so runs can overlap.
  local args=(serve --listen "127.0.0.1:$port" --shards 2 --admin-listen 127.0.0.1:0)
  local help
  help=$("$bin" serve --help 2>/dev/null || true)
  if grep -q -- '--data-dir' <<<"$help"; then
    args+=(--data-dir "$dir/arqonbus-data")
  fi
  if [[ -n $config ]]; then
    args+=(--config "$config")
  elif grep -q -- '--config' <<<"$help"; then
    # Retained realities for the durable scenario, one per sync mode; each bounded to 2 GiB.
    cat >"$dir/arqonbus-bench.toml" <<TOML
[[retention]]
realities = "bench-sync-always*"
sync = "always"
max_bytes = 2147483648

[[retention]]
realities = "bench-sync-os*"
sync = "os"
max_bytes = 2147483648

[control]
controller_tokens = ["$BENCH_CONTROLLER_TOKEN"]
TOML
    # Delta-only topics for the delta scenario, where the server knows them (`config --check`
    # refuses a key it does not know; an older server then runs without the rule).
    cp "$dir/arqonbus-bench.toml" "$dir/arqonbus-bench-delta.toml"
    cat >>"$dir/arqonbus-bench-delta.toml" <<'TOML'

[[delta]]
realities = "bench-*"
topics = "bench.delta.>"
keyframe_every = 100
TOML
    if "$bin" config --check "$dir/arqonbus-bench-delta.toml" >/dev/null 2>&1; then
      mv "$dir/arqonbus-bench-delta.toml" "$dir/arqonbus-bench.toml"
      ARQ_HAS_DELTA=1
    else
      rm -f "$dir/arqonbus-bench-delta.toml"
    fi
    args+=(--config "$dir/arqonbus-bench.toml")
  fi
  (cd "$dir" && exec "$bin" "${args[@]}") >"$log" 2>&1 &
  ARQ_PID=$!
  SERVER_PIDS+=("$ARQ_PID")
  if ! wait_port "$port" 15; then
    echo "arqonbus did not start; its log:" >&2
    tail -20 "$log" >&2
    return 1
  fi
}

# start_nats BIN PORT WORKDIR LOG: nats-server with JetStream (file store in WORKDIR), sets NATS_PID.
start_nats() {
  local bin=$1 port=$2 dir=$3 log=$4
  "$bin" -a 127.0.0.1 -p "$port" -js -sd "$dir/jetstream" >"$log" 2>&1 &
  NATS_PID=$!
  SERVER_PIDS+=("$NATS_PID")
  if ! wait_port "$port" 15; then
    echo "nats-server did not start; its log:" >&2
    tail -20 "$log" >&2
    return 1
  fi
}

# Stops the servers this script started (by PID), politely then firmly.
stop_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${SERVER_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for pid in "${SERVER_PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PIDS=()
}

# Cores busy (user+nice+system+irq+softirq) over the next $1 seconds, from /proc/stat.
busy_cores() {
  local secs=${1:-5} a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat)
  sleep "$secs"
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat)
  awk -v a="$a" -v b="$b" -v s="$secs" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b - a) / hz / s}'
}

# Waits up to $1 seconds for the machine to be quiet (under $2 busy cores over 10 s), so that
# other work does not skew a comparison. Returns 1 if it never was.
wait_quiet() {
  local max=$1 limit=${2:-0.3} waited=0 busy
  while :; do
    busy=$(busy_cores 10)
    if awk -v b="$busy" -v l="$limit" 'BEGIN {exit !(b < l)}'; then
      echo "machine quiet: $busy cores busy" >&2
      return 0
    fi
    waited=$((waited + 10))
    if ((waited >= max)); then
      echo "machine still busy after ${max}s ($busy cores); running anyway" >&2
      return 1
    fi
    echo "machine busy ($busy cores); waiting" >&2
  done
}
