#!/usr/bin/env bash
# What the query API's rate limiter costs: the same query load against the engine
# with the limiter on and off, alternated (on, off, on, off) in one run so that both
# see the same machine. Prints requests/s and latency of each round and the ratio.
#
#   cargo build --release -p ooni-engine -p ooni-loadgen
#   tools/ratelimit-bench.sh [SECONDS_PER_ROUND] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
CLIENTS="${2:-32}"
BIN="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
QUERY='/api/v1/measurements?limit=10&since=2026-01-01&until=2026-12-31'

round() { # $1 = true|false
  local log="$WORK/engine-$1.log"
  OONI_RATE_LIMIT="$1" OONI_UPLOAD_INTERVAL_SECS=0 OONI_PLUGINS_DIR="$WORK/plugins" OONI_FINGERPRINTS_DIR="$WORK/fingerprints" \
    "$BIN/ooni-engine" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$log" 2>/dev/null &
  local pid=$!
  local addr=""
  for _ in $(seq 1 1200); do
    addr="$(sed -n 's/^ooni-engine listening on //p' "$log")"
    [ -n "$addr" ] && break
    sleep 0.05
  done
  [ -n "$addr" ] || { echo "engine did not start:" >&2; cat "$log" >&2; exit 1; }
  local out
  out="$("$BIN/ooni-loadgen" --url "http://$addr" --get "$QUERY" --probes "$CLIENTS" --seconds "$SECS")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "rate_limit=$1 $out"
}

# Some rows to query: the engine's own upload load for a few seconds.
OONI_UPLOAD_INTERVAL_SECS=0 OONI_PLUGINS_DIR="$WORK/plugins" OONI_FINGERPRINTS_DIR="$WORK/fingerprints" "$BIN/ooni-engine" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/seed.log" 2>/dev/null &
SEED=$!
for _ in $(seq 1 1200); do grep -q listening "$WORK/seed.log" && break; sleep 0.05; done
"$BIN/ooni-loadgen" --url "http://$(sed -n 's/^ooni-engine listening on //p' "$WORK/seed.log")" \
  --probes 16 --seconds 3 >/dev/null
kill "$SEED"; wait "$SEED" 2>/dev/null || true

results=()
for r in true false true false; do
  line="$(round "$r")"
  echo "$line"
  results+=("$line")
done
python3 - "${results[@]}" <<'PY'
import json, sys
on, off = [], []
for line in sys.argv[1:]:
    flag, js = line.split(" ", 1)
    (on if flag.endswith("true") else off).append(json.loads(js)["requests_per_s"])
print(f"requests/s with the limiter: {sum(on)/len(on):.0f}, without: {sum(off)/len(off):.0f}, ratio on/off: {sum(on)/sum(off):.3f}")
PY
