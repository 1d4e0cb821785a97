#!/usr/bin/env bash
# A libFuzzer campaign: the named targets (all seven by default) one after another, each for
# $SECS seconds (600 unless set), a single job each, niced so other builds keep priority.
# Build first: nice -n 15 cargo fuzz build -s none --codegen-units 16
# The binaries are copied aside so a rebuild during the campaign cannot replace them mid-run.
# Output: campaign/logs/<target>.log (libFuzzer's final stats at the end), crashes in
# artifacts/<target>/, the grown corpus in corpus/<target>/.
set -u
cd "$(dirname "$0")"
SECS=${SECS:-600}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(frame hello token config policy_input delta recovery)
mkdir -p campaign/bin campaign/logs
for t in "${targets[@]}"; do
  cp "target/x86_64-unknown-linux-gnu/release/$t" campaign/bin/
done
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "$(date -u +%H:%M:%S) start $t" >> campaign/logs/progress
  nice -n 15 "campaign/bin/$t" -max_total_time="$SECS" -print_final_stats=1 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" "corpus/$t" "seeds/$t" \
    > "campaign/logs/$t.log" 2>&1
  echo "$(date -u +%H:%M:%S) end $t rc=$?" >> campaign/logs/progress
done
