#!/bin/bash
# usage: ab.sh BINDIR SIZE N  -> prints one line
set -e
BIN=$1; SIZE=$2; N=$3; TYPE=${4:-noop}
D=$(mktemp -d /tmp/abrun.XXXX)
NP=$((20000 + RANDOM % 20000)); HP=$((NP+1))
$BIN/conductord --data $D/data --nats 127.0.0.1:$NP --http 127.0.0.1:$HP >$D/c.log 2>&1 &
CP=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:$HP/healthz >/dev/null 2>&1 && break; sleep 0.1; done
$BIN/workerd --conductor nats://127.0.0.1:$NP --host-id ab --pool "name=$TYPE,count=2,cmd=$BIN/noop-worker" >$D/w.log 2>&1 &
WP=$!
for i in $(seq 100); do [ "$(curl -s http://127.0.0.1:$HP/v1/workers | grep -o '"state":"ready"' | wc -l)" -ge 2 ] && break; sleep 0.1; done
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
c0=$(cpu $CP); w0=$(cpu $WP)
wk=$(pgrep -P $WP noop-worker | head -1); k0=$(cpu $wk)
out=$(/tmp/pub -url nats://127.0.0.1:$NP -size $SIZE -n $N -type $TYPE)
c1=$(cpu $CP); w1=$(cpu $WP); k1=$(cpu $wk)
echo "$out | cpu ms/job: conductord $(( (c1-c0)*10000/N ))e-3 workerd $(( (w1-w0)*10000/N ))e-3 worker1 $(( (k1-k0)*10000/N ))e-3"
kill $WP; wait $WP 2>/dev/null || true
kill $CP; wait $CP 2>/dev/null || true
rm -rf $D
