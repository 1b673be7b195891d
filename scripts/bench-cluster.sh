#!/usr/bin/env bash
# bench-cluster.sh: issue 18's figures, conductor on a JetStream cluster of
# three nats-server processes (docs/benchmarks.md, "Issue 18"). It prints
# the machine, then runs, one after the other (never two at once: they
# share the cores), the benchmarks of integration/bench_cluster_test.go and
# integration/bench_cluster_failover_test.go:
#   - BenchmarkClusterThroughput: e2e no-op jobs/s against the raw R3 work
#     queue, BENCH_CLUSTER_PAIRS (5) interleaved pairs of BENCH_CLUSTER_JOBS
#     (50,000) each;
#   - BenchmarkClusterScaling: a 2 ms job on 1, 2 and 3 hosts of 2 workers,
#     BENCH_CLUSTER_RUNS (5) rounds;
#   - BenchmarkClusterServerLoss, BenchmarkClusterLeaderLoss,
#     BenchmarkClusterHostLoss: BENCH_CLUSTER_RUNS (5) kills each.
# Each benchmark logs every run's figure and the median, min and max. Any
# arguments go to go test (e.g. -bench ClusterThroughput to run one).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
echo "machine: $(nproc) cores, Linux $(uname -r), $(go version | cut -d' ' -f3-), load $(cut -d' ' -f1-3 /proc/loadavg)"
exec go test -run '^$' -bench 'Cluster' -benchtime 1x -count 1 -timeout 40m -v "$@" ./integration/
