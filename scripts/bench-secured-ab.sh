#!/usr/bin/env bash
# bench-secured-ab.sh BASE [ROUNDS]: interleaved A/B rounds of
# BenchmarkSecured (integration/bench_secure_test.go), A = the commit BASE
# (in a temporary worktree), B = the work tree. Each round runs two pairs
# (plain and secured clusters) on A, then two on B, so that a slow spell
# of the machine hits both sides; it prints the median, min and max of
# each figure per side. Needs python3.
set -euo pipefail
base=${1:?usage: bench-secured-ab.sh BASE [ROUNDS]}
rounds=${2:-5}
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tmp/a" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$root" worktree add --detach -q "$tmp/a" "$base"
for i in $(seq 1 "$rounds"); do
	for side in A B; do
		dir=$root
		[ "$side" = A ] && dir=$tmp/a
		(cd "$dir" && go test -run '^$' -bench Secured -benchtime 1x -count 2 -timeout 20m ./integration/ | grep '^BenchmarkSecured' | sed "s/^/$side /") >>"$tmp/runs.txt" || true
		echo "round $i $side done" >&2
	done
done
python3 - "$tmp/runs.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for key in ["e2e_ratio", "raw_tls_ratio", "e2e_plain_jobs/s", "e2e_secured_jobs/s"]:
    for side in "AB":
        v = [float(r[i - 1]) for r in rows if r[0] == side for i, x in enumerate(r) if x == key]
        if v:
            print(f"{key:20} {side}: median {statistics.median(v):.3f} min {min(v):.3f} max {max(v):.3f} ({len(v)} pairs)")
PY
