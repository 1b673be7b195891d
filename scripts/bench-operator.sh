#!/usr/bin/env bash
# bench-operator.sh [ROUNDS]: what the operator's surfaces cost, each
# against a baseline of the same sitting (docs/benchmarks.md, "Issue 17").
# Each round runs, in turn:
#   - BenchmarkConsoleSample, BenchmarkScrape and BenchmarkLogTail
#     (pkg/conductor/operator_bench_test.go), each of which times its
#     surface and its baseline in alternating order within its iterations;
#   - conductorctl's start-up against curl, against one conductord (bin/,
#     an empty data dir, 10 job types of 3 queued jobs each): PAIRS pairs
#     (default 10) of `bin/conductorctl pools -o json` then
#     `curl -s .../v1/pools`, and then PAIRS of `bin/conductorctl --version`,
#     each timed from outside (wall; CPU: the child's user + system).
# It prints, per figure, the median, min and max over the rounds, and the
# ratios 100 types / 1 type taken round by round. Needs python3 and curl.
set -euo pipefail
rounds=${1:-5}
pairs=${PAIRS:-10}
root=$(git rev-parse --show-toplevel)
cd "$root"
tmp=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, Linux $(uname -r), $(go version | cut -d' ' -f3-)" >&2
make -s build >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
bin/conductord --data "$tmp/data" --nats 127.0.0.1:0 --http "127.0.0.1:$port" --log-level warn 2>"$tmp/conductord.log" &
pid=$!
for _ in $(seq 1 100); do
	curl -sf "$url/healthz" >/dev/null && break
	sleep 0.1
done
for t in $(seq -w 0 9); do
	for j in 1 2 3; do
		curl -sf -X POST -H 'Content-Type: application/json' -d "$j" "$url/v1/jobs/type$t" >/dev/null
	done
done

# timeit OUT N CMD_A [-- CMD_B]: runs CMD_A, then CMD_B if given, N times
# in turn, and appends to OUT.a (and OUT.b) one line per run: wall and CPU
# seconds (the child's user + system, from wait4).
timeit() {
	python3 - "$@" <<'PY'
import os, subprocess, sys, time
out, n, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cmds = [rest]
if '--' in rest:
    k = rest.index('--')
    cmds = [rest[:k], rest[k + 1:]]
files = [open(out + side, 'a') for side in '.a .b'.split()[:len(cmds)]]
for _ in range(n):
    for cmd, f in zip(cmds, files):
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        if status != 0:
            sys.exit(f'{cmd}: exit status {status}')
        print(f'{wall:.6f} {ru.ru_utime + ru.ru_stime:.6f}', file=f)
PY
}

for i in $(seq 1 "$rounds"); do
	echo "round $i of $rounds, $(uptime | sed 's/.*load/load/')" >&2
	{
		go test -run '^$' -bench 'ConsoleSample' -benchtime 100x -count 1 ./pkg/conductor/
		go test -run '^$' -bench 'Scrape' -benchtime 50x -count 1 ./pkg/conductor/
		go test -run '^$' -bench 'LogTail' -benchtime 1000x -count 1 ./pkg/conductor/
	} | grep '^Benchmark' >"$tmp/go-$i.txt"
	timeit "$tmp/ctl-$i" "$pairs" bin/conductorctl --server "$url" pools -o json -- curl -s "$url/v1/pools"
	timeit "$tmp/version-$i" "$pairs" bin/conductorctl --version
done

python3 - "$tmp" "$rounds" <<'PY'
import re, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def span(v):
    v = [x for x in v if x is not None]
    if not v:
        return 'none'
    return f'{statistics.median(v):.4g} ({min(v):.4g}-{max(v):.4g})'
runs = []  # per round: {bench: {unit: value}}
for i in range(1, rounds + 1):
    r = {}
    for line in open(f'{tmp}/go-{i}.txt'):
        name = re.sub(r'-\d+$', '', line.split()[0])
        r[name] = {u: float(v) for v, u in re.findall(r'([\d.e+-]+) (\S+)', line.split(None, 2)[2])}
    runs.append(r)
for name in sorted({n for r in runs for n in r}):
    print(name)
    for u in sorted({u for r in runs for u in r.get(name, {})}):
        print(f'  {u:18s} {span([r.get(name, {}).get(u) for r in runs])}')
for bench, units in [('BenchmarkConsoleSample', ['sample-µs', 'sample-cpu-µs', 'pools-µs', 'frame-B']),
                     ('BenchmarkScrape', ['scrape-µs', 'scrape-cached-µs', 'scrape-cpu-µs', 'pools-µs', 'healthz-µs', 'body-B'])]:
    for u in units:
        v = [r[f'{bench}/types=100'][u] / r[f'{bench}/types=1'][u] for r in runs
             if f'{bench}/types=100' in r and f'{bench}/types=1' in r]
        print(f'{bench} {u} types=100 / types=1: {span(v)}')
def times(kind, i):
    try:
        return [tuple(map(float, l.split())) for l in open(f'{tmp}/{kind}')]
    except OSError:
        return []
ctl = [t for i in range(1, rounds + 1) for t in times(f'ctl-{i}.a', i)]
curl = [t for i in range(1, rounds + 1) for t in times(f'ctl-{i}.b', i)]
ver = [t for i in range(1, rounds + 1) for t in times(f'version-{i}.a', i)]
for k, what in [(0, 'wall s'), (1, 'cpu s')]:
    print(f'conductorctl pools -o json {what}: {span([t[k] for t in ctl])}')
    print(f'curl -s /v1/pools {what}:          {span([t[k] for t in curl])}')
    print(f'  ratio ctl/curl, pair by pair:     {span([a[k] / b[k] for a, b in zip(ctl, curl) if b[k] > 0])}')
    print(f'conductorctl --version {what}:     {span([t[k] for t in ver])}')
PY
