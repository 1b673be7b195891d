#!/usr/bin/env bash
# bench-ab.sh BASE [PAIRS]: interleaved A/B pairs of the job path's
# benchmarks, A = the commit BASE (in a temporary worktree), B = the work
# tree. Each pair runs BenchmarkProcess_NoopJobs (one SDK worker process,
# 200,000 jobs) and BenchmarkEndToEnd (the real binaries) on A, then on B,
# so that a slow spell of the machine hits both sides. It prints, per
# figure, the median, min and max of B/A over the pairs. Needs python3.
set -euo pipefail
base=${1:?usage: bench-ab.sh BASE [PAIRS]}
pairs=${2:-5}
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tmp/a" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$root" worktree add --detach -q "$tmp/a" "$base"
for i in $(seq 1 "$pairs"); do
	for side in A B; do
		dir=$root
		[ "$side" = A ] && dir=$tmp/a
		(cd "$dir" && go test -run '^$' -bench 'Process_NoopJobs' -benchtime 200000x -count 1 ./pkg/worker/ | grep '^Benchmark') >"$tmp/noop-$side-$i.txt" || true
		(cd "$dir" && go test -run '^$' -bench 'EndToEnd' -benchtime 1x -count 1 -timeout 20m ./integration/ | grep '^Benchmark') >"$tmp/e2e-$side-$i.txt" || true
		echo "pair $i $side done" >&2
	done
done
python3 - "$tmp" "$pairs" <<'PY'
import re, statistics, sys
tmp, pairs = sys.argv[1], int(sys.argv[2])
def figures(path):
    try:
        line = open(path).readline()
    except OSError:
        return {}
    return {name: float(v) for v, name in re.findall(r'([\d.]+) ([A-Za-z_0-9/-]+)', line)}
for kind, keys in [('noop', ['ns/op', 'cpu-ns/job', 'csw/job']),
                   ('e2e', ['raw_msgs/s', 'e2e_jobs/s', 'ratio', 'ratio_gomaxprocs1',
                            'e2e_after_publish_jobs/s', 'e2e_prefetch0_jobs/s', 'http_wait_p50_ms', 'workerd_MB'])]:
    for k in keys:
        a = [figures(f'{tmp}/{kind}-A-{i}.txt').get(k) for i in range(1, pairs + 1)]
        b = [figures(f'{tmp}/{kind}-B-{i}.txt').get(k) for i in range(1, pairs + 1)]
        r = [y / x for x, y in zip(a, b) if x and y]
        if not r:
            print(f'{kind} {k}: no complete pair')
            continue
        def span(v):
            v = [x for x in v if x is not None]
            return f'{statistics.median(v):.4g} ({min(v):.4g}-{max(v):.4g})'
        print(f'{kind} {k:26s} A {span(a):28s} B {span(b):28s} B/A {statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f}), {len(r)} pairs')
PY
