#!/usr/bin/env bash
# The performance measurements of BENCHMARKS.md in one go: builds in release mode, starts
# `loadtest sink` and measures the gRPC/protobuf ceiling, starts ratingd (loadtest/ratingd.toml,
# fresh data dir) and measures its maximum throughput and its latency at half that rate, then
# its restart time with the records written, and prints the table rows. Everything it starts
# is stopped on exit. Not part of the test suite: timings are not tests.
#
# Usage: loadtest/run.sh [EVENTS]   (default 10,000,000 for the ratingd run)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${1:-10000000}"
SINK_EVENTS=$((EVENTS < 5000000 ? EVENTS : 5000000))
SHAPE=(--batch 1000 --streams 2 --in-flight 8 --accounts 100000 --dup-ratio 0.1)
SINK_ADDR=127.0.0.1:50061
RATINGD_ADDR=127.0.0.1:50071
METRICS_ADDR=127.0.0.1:50072
WORK="target/loadtest-run"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

command -v python3 >/dev/null || { echo "run.sh needs python3 (to read the JSON summaries)" >&2; exit 1; }
cargo build --release --locked -q -p ratingd -p loadtest
LT=target/release/loadtest
RD=target/release/ratingd
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$1" "$2"; }
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
today=$(date -u +%Y-%m-%d)
rm -rf "$WORK" && mkdir -p "$WORK"

# 1. The ceiling: the same load against the null sink.
$LT sink --listen "$SINK_ADDR" > "$WORK/sink.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$WORK/sink.log" && break; sleep 0.1; done
$LT run --target "http://$SINK_ADDR" --events "$SINK_EVENTS" "${SHAPE[@]}" --json > "$WORK/sink.json"
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true; pids=()

# 2. ratingd with a fresh data dir, same load.
start_ratingd() {
  sed -e "s#^data_dir = .*#data_dir = \"$WORK/data\"#" \
      -e "s#^listen = .*#listen = \"$RATINGD_ADDR\"#" \
      -e "s#^metrics_listen = .*#metrics_listen = \"$METRICS_ADDR\"#" \
      loadtest/ratingd.toml > "$WORK/ratingd.toml"
  local t0; t0=$(date +%s.%N)
  $RD --config "$WORK/ratingd.toml" > "$WORK/ratingd.out" 2> "$WORK/ratingd.err" &
  RD_PID=$!
  pids+=($RD_PID)
  until grep -q "listening" "$WORK/ratingd.out"; do
    kill -0 "$RD_PID" 2>/dev/null || { echo "ratingd did not start:" >&2; cat "$WORK/ratingd.err" >&2; exit 1; }
    sleep 0.02
  done
  STARTUP_S=$(python3 -c "import sys; print(round($(date +%s.%N) - $t0, 2))")
}
start_ratingd
$LT run --target "http://$RATINGD_ADDR" --events "$EVENTS" "${SHAPE[@]}" --json > "$WORK/ratingd.json"

# 3. Latency at half the maximum rate (offered load held fixed, latency from intended send time).
max_rate=$(field "$WORK/ratingd.json" "['events_per_sec']")
half=$(python3 -c "print(int($max_rate / 2))")
half_events=$(python3 -c "print(max(100000, int($half * 20)))")
$LT run --target "http://$RATINGD_ADDR" --events "$half_events" --rate "$half" "${SHAPE[@]}" --json > "$WORK/half.json"

# 4. Restart with everything written so far in the dedupe window: after SIGKILL (the last periodic
#    checkpoint, then a replay of the blocks after it), and after a graceful stop (which writes a
#    checkpoint of everything).
records=$(($(field "$WORK/ratingd.json" "['accepted']") + $(field "$WORK/half.json" "['accepted']")))
disk_bytes=$(du -sb "$WORK/data" | cut -f1)
kill -KILL "$RD_PID"; wait "$RD_PID" 2>/dev/null || true; pids=()
start_ratingd; restart_killed=$STARTUP_S
kill -TERM "$RD_PID"; wait "$RD_PID" 2>/dev/null || true; pids=()
start_ratingd; restart_graceful=$STARTUP_S
rss_mib=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$RD_PID/status")

sink_rate=$(field "$WORK/sink.json" "['events_per_sec']")
echo
echo "| figure | value | measured |"
echo "|---|---|---|"
echo "| sink ceiling | $(printf %.0f "$sink_rate") events/s ($SINK_EVENTS events) | $today @ $commit |"
echo "| ratingd maximum throughput | $(printf %.0f "$max_rate") events/s ($EVENTS events; p99 $(field "$WORK/ratingd.json" "['p99_ms']") ms; daemon $(field "$WORK/ratingd.json" "['daemon']['cpu_cores']") cores, peak RSS $(field "$WORK/ratingd.json" "['daemon']['peak_rss_mib']") MiB) | $today @ $commit |"
echo "| ratingd / sink, same run | $(python3 -c "print(f'{$max_rate / $sink_rate * 100:.1f}%')") | $today @ $commit |"
echo "| latency at half load ($half events/s offered) | p50 $(field "$WORK/half.json" "['p50_ms']") ms, p99 $(field "$WORK/half.json" "['p99_ms']") ms, p999 $(field "$WORK/half.json" "['p999_ms']") ms; $(field "$WORK/half.json" "['late_batches']") late batches | $today @ $commit |"
echo "| restart with $records records in the window, start to listening | $restart_killed s after SIGKILL (checkpoint + replay), $restart_graceful s after SIGTERM (checkpoint only) | $today @ $commit |"
echo "| RSS after the restart (window and totals loaded) | $rss_mib MiB | $today @ $commit |"
echo "| disk bytes per rated record | $(python3 -c "print(round($disk_bytes / $records))") ($disk_bytes bytes for $records records) | $today @ $commit |"
echo
echo "JSON summaries: $WORK/sink.json, $WORK/ratingd.json, $WORK/half.json"
