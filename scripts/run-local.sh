#!/usr/bin/env bash
# Starts a local conductor cluster in the foreground: conductord with its
# embedded NATS, and one workerd running the squares pool. Ctrl-C stops
# workerd first (in-flight jobs finish), then conductord.
set -euo pipefail
set -m # each background job gets its own process group: Ctrl-C reaches only this script
cd "$(dirname "$0")/.."

BIN=./bin
DATA=${DATA:-./data}
HTTP=${HTTP:-127.0.0.1:7070}
NATS=${NATS:-127.0.0.1:4222}

"$BIN/conductord" --data "$DATA" --http "$HTTP" --nats "$NATS" &
conductord=$!
workerd=

stop() {
	trap - INT TERM
	echo
	echo "stopping workerd, then conductord..."
	[ -n "$workerd" ] && kill -TERM "$workerd" 2>/dev/null && wait "$workerd" || true
	kill -TERM "$conductord" 2>/dev/null && wait "$conductord" || true
	echo "stopped."
	exit 0
}
trap stop INT TERM

for _ in $(seq 100); do
	if "$BIN/conductorctl" --server "http://$HTTP" pools >/dev/null 2>&1; then
		break
	fi
	kill -0 "$conductord" 2>/dev/null || { echo "conductord did not start" >&2; exit 1; }
	sleep 0.1
done

"$BIN/workerd" --conductor "nats://$NATS" --host-id local --pool "name=squares,count=2,cmd=$BIN/squares-worker" &
workerd=$!

cat <<INFO

conductor is running.
  dashboard:   http://$HTTP/
  HTTP API:    http://$HTTP/v1/pools   (see docs/api.md)
  NATS:        nats://$NATS
  submit a job and wait for its result:
      $BIN/conductorctl submit --wait squares 7
      curl -s -XPOST 'http://$HTTP/v1/jobs/squares?wait=10s' -d 7
  watch:       $BIN/conductorctl pools; $BIN/conductorctl workers
Ctrl-C stops the cluster.

INFO
wait
