#!/usr/bin/env bash
# make run: Redis (started here if none answers), the development sink, the
# daemon, the demo campaign and a handful of signatures. Ctrl-C stops
# everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-bin/petitiond}
STATE=.demo
SINK_DIR=$STATE/sink
mkdir -p "$STATE" "$SINK_DIR"
rm -f "$SINK_DIR"/*.eml "$SINK_DIR"/arrivals.jsonl
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

export PETITIOND_REDIS_URL=${PETITIOND_REDIS_URL:-redis://127.0.0.1:6379/0}
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if ! redis_up; then
  command -v redis-server >/dev/null || scripts/install-deps.sh
  echo "demo: starting redis-server on 127.0.0.1:6379 (data in $STATE)"
  redis-server --port 6379 --bind 127.0.0.1 --dir "$STATE" --save "" --appendonly no \
    --maxmemory-policy noeviction >"$STATE/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "demo: redis-server did not start; see $STATE/redis.log" >&2; exit 1; }
else
  echo "demo: using the redis-server already answering on 127.0.0.1:6379"
fi

echo "demo: starting the development sink on 127.0.0.1:2525 (messages in $SINK_DIR)"
"$BIN" sink --listen 127.0.0.1:2525 --dir "$SINK_DIR" 2>"$STATE/sink.log" &
pids+=($!)

echo "demo: starting petitiond serve (log in $STATE/petitiond.log, metrics on http://127.0.0.1:9464/metrics)"
"$BIN" serve --config demo/petitiond.yaml 2>"$STATE/petitiond.log" &
pids+=($!)

"$BIN" campaign apply --config demo/petitiond.yaml demo/campaign.yaml
"$BIN" enqueue --config demo/petitiond.yaml <demo/signatures.jsonl

want=$(( $(grep -c . demo/signatures.jsonl) * 6 ))
echo "demo: waiting for $want messages in the sink"
for _ in $(seq 600); do
  n=$(find "$SINK_DIR" -name '*.eml' | wc -l)
  [ "$n" -ge "$want" ] && break
  sleep 0.1
done
n=$(find "$SINK_DIR" -name '*.eml' | wc -l)
echo "demo: $n messages landed in $SINK_DIR:"
ls "$SINK_DIR" | head -8
first=$(find "$SINK_DIR" -name '*.eml' | sort | head -1)
if [ -n "$first" ]; then
  echo "--- $first (headers) ---"
  sed -n '1,/^\r\{0,1\}$/p' "$first"
fi
"$BIN" status --config demo/petitiond.yaml --signature demo-0002 || true
echo
echo "demo: running. Try: $BIN status --config demo/petitiond.yaml ; curl -s 127.0.0.1:9464/metrics | grep petitiond_deliveries_total"
echo "demo: Ctrl-C to stop."
wait
