#!/usr/bin/env bash
# Starts a local conductor cluster in the foreground: conductord with its
# embedded NATS, and one workerd running the squares pool. Ctrl-C stops
# workerd first (in-flight jobs finish), then conductord. HTTP, NATS and
# DATA (environment or make variables) move its listeners and data.
set -euo pipefail
set -m # each background job gets its own process group: Ctrl-C reaches only this script
cd "$(dirname "$0")/.."

BIN=./bin
DATA=${DATA:-./data}
HTTP=${HTTP:-127.0.0.1:7070}
NATS=${NATS:-127.0.0.1:4222}

say() { echo "==> $*"; }

say "starting conductord: HTTP API and dashboard on $HTTP, NATS on $NATS, data in $DATA"
"$BIN/conductord" --data "$DATA" --http "$HTTP" --nats "$NATS" &
conductord=$!
workerd=

stop() {
	trap - INT TERM
	echo
	say "stopping workerd (in-flight jobs finish), then conductord..."
	[ -n "$workerd" ] && kill -TERM "$workerd" 2>/dev/null && wait "$workerd" || true
	kill -TERM "$conductord" 2>/dev/null && wait "$conductord" || true
	say "stopped."
	exit 0
}
trap stop INT TERM

say "waiting for conductord to answer on http://$HTTP ..."
ready=
for _ in $(seq 100); do
	if "$BIN/conductorctl" --server "http://$HTTP" pools >/dev/null 2>&1; then
		ready=1
		break
	fi
	if ! kill -0 "$conductord" 2>/dev/null; then
		echo "conductord did not start (see its log above). A port in use? Move it: make run HTTP=127.0.0.1:7071 NATS=127.0.0.1:4223" >&2
		exit 1
	fi
	sleep 0.1
done
if [ -z "$ready" ]; then
	echo "conductord did not answer on http://$HTTP within 10s; stopping it" >&2
	kill -TERM "$conductord" 2>/dev/null && wait "$conductord" || true
	exit 1
fi
say "conductord is ready (pid $conductord)"

say "starting workerd: host local, pool squares (2 workers of $BIN/squares-worker), conductor nats://$NATS"
"$BIN/workerd" --conductor "nats://$NATS" --host-id local --pool "name=squares,count=2,cmd=$BIN/squares-worker" &
workerd=$!

cat <<INFO

conductor is running.
  dashboard:   http://$HTTP/
  HTTP API:    http://$HTTP/v1/pools   (see docs/api.md)
  metrics:     http://$HTTP/metrics    (see docs/metrics.md)
  NATS:        nats://$NATS
  data:        $DATA
  submit a job and wait for its result:
      $BIN/conductorctl --server http://$HTTP submit --wait squares 7
      curl -s -XPOST 'http://$HTTP/v1/jobs/squares?wait=10s' -d 7
  watch:       $BIN/conductorctl --server http://$HTTP pools; $BIN/conductorctl --server http://$HTTP workers
  other ports or data directory: make run HTTP=127.0.0.1:8080 NATS=127.0.0.1:4333 DATA=/tmp/conductor-data
      (or the same variables in the environment of scripts/run-local.sh)
Ctrl-C stops the cluster.

INFO
wait
