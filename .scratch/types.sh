#!/bin/bash
# usage: types.sh BINDIR K N  (K types of one worker each, or K=1: one pool of 2)
set -e
BIN=$1; K=$2; N=$3
D=$(mktemp -d /tmp/tyrun.XXXX)
NP=$((20000 + RANDOM % 20000)); HP=$((NP+1))
$BIN/conductord --data $D/data --nats 127.0.0.1:$NP --http 127.0.0.1:$HP >$D/c.log 2>&1 &
CP=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:$HP/healthz >/dev/null 2>&1 && break; sleep 0.1; done
args=()
if [ $K = 1 ]; then args+=(--pool "name=noop0,count=2,cmd=$BIN/noop-worker"); W=2; else for i in $(seq 0 $((K-1))); do args+=(--pool "name=noop$i,count=1,cmd=$BIN/noop-worker"); done; W=$K; fi
$BIN/workerd --conductor nats://127.0.0.1:$NP --host-id ty "${args[@]}" >$D/w.log 2>&1 &
WP=$!
for i in $(seq 300); do [ "$(curl -s http://127.0.0.1:$HP/v1/workers | grep -o '"state":"ready"' | wc -l)" -ge $W ] && break; sleep 0.1; done
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
c0=$(cpu $CP); w0=$(cpu $WP)
out=$(/tmp/pub -url nats://127.0.0.1:$NP -size 100 -n $N -types $K)
c1=$(cpu $CP); w1=$(cpu $WP)
echo "K=$K $out | cpu us/job: conductord $(( (c1-c0)*10000000/N/1000 )) workerd $(( (w1-w0)*10000000/N/1000 )) | workerd rss $(grep VmRSS /proc/$WP/status)"
kill $WP; wait $WP 2>/dev/null || true
kill $CP; wait $CP 2>/dev/null || true
grep -h "WARN\|ERROR" $D/w.log $D/c.log | cut -c1-300 | sort | uniq -c | sort -rn | head -8; rm -rf $D
