package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
)

// The benchmarks of issue 18: conductor on a 3-server NATS cluster, each
// server a nats-server process of its own (built from the module's
// nats-server dependency), conductord with --nats-url (R3), the hosts'
// workerds against the same URLs. Figures go to docs/benchmarks.md, "Issue
// 18"; scripts/bench-cluster.sh runs them all.

// The knobs, from the environment (the defaults keep each benchmark to a
// few minutes on 2 cores): BENCH_CLUSTER_PAIRS, the A/B pairs of the
// throughput benchmark (5); BENCH_CLUSTER_JOBS, the messages (jobs) of each
// throughput measurement (50,000, as BenchmarkEndToEnd); BENCH_CLUSTER_RUNS, the runs of each
// scaling, fail-over and host-loss measurement (5).
func clusterPairs(b *testing.B) int { return envInt(b, "BENCH_CLUSTER_PAIRS", 5) }
func clusterJobs(b *testing.B) int  { return envInt(b, "BENCH_CLUSTER_JOBS", benchJobs) }
func clusterRuns(b *testing.B) int  { return envInt(b, "BENCH_CLUSTER_RUNS", 5) }

// buildNATSServer builds nats-server into bin, once.
var buildNATSServer = sync.OnceValue(func() error {
	cmd := exec.Command("go", "build", "-o", filepath.Join(bin, "nats-server"), "github.com/nats-io/nats-server/v2")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build nats-server: %w\n%s", err, out)
	}
	return nil
})

// natsNode is one nats-server process of a natsProcs cluster.
type natsNode struct {
	name string
	url  string
	args []string
	p    *proc
}

// natsProcs is a JetStream cluster of nats-server processes, routed to
// each other, each with its own store; they stop at cleanup.
type natsProcs struct {
	t     testing.TB
	nodes []*natsNode
}

// startNATSProcs starts n nats-server processes as one JetStream cluster
// and waits until an R3 stream can be placed on it.
func startNATSProcs(t testing.TB, n int) *natsProcs {
	t.Helper()
	require.NoError(t, buildNATSServer())
	addrs := freeAddrs(t, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, "nats://"+addrs[n+i])
	}
	np := &natsProcs{t: t}
	for i := range n {
		host, port, _ := strings.Cut(addrs[i], ":")
		nd := &natsNode{name: fmt.Sprintf("n%d", i+1), url: "nats://" + addrs[i]}
		nd.args = []string{"-a", host, "-p", port, "--server_name", nd.name, "-js", "-sd", t.TempDir(),
			"--cluster_name", "bench", "--cluster", "nats://" + addrs[n+i], "--routes", strings.Join(routes, ",")}
		nd.p = start(t, "nats-server", nd.args...)
		np.nodes = append(np.nodes, nd)
	}
	np.waitR3()
	return np
}

// urls is the servers' client URLs, comma-separated.
func (np *natsProcs) urls() string {
	var us []string
	for _, nd := range np.nodes {
		us = append(us, nd.url)
	}
	return strings.Join(us, ",")
}

// waitR3 waits until a stream of 3 replicas can be made (the meta leader
// sees every server), and removes it.
func (np *natsProcs) waitR3() {
	t := np.t
	t.Helper()
	require.Eventually(t, func() bool {
		nc, err := nats.Connect(np.urls(), nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "probe", Subjects: []string{"probe"}, Replicas: 3}); err != nil {
			return false
		}
		return js.DeleteStream(ctx, "probe") == nil
	}, 60*time.Second, 200*time.Millisecond, "nats-server cluster: no R3 stream placed")
}

// kill SIGKILLs the server named name, and returns it.
func (np *natsProcs) kill(name string) *natsNode {
	np.t.Helper()
	for _, nd := range np.nodes {
		if nd.name == name {
			require.NoError(np.t, nd.p.cmd.Process.Signal(syscall.SIGKILL))
			<-nd.p.exited
			return nd
		}
	}
	np.t.Fatalf("no nats-server %q", name)
	return nil
}

// restart starts a killed server again, on its ports and store.
func (np *natsProcs) restart(nd *natsNode) { nd.p = start(np.t, "nats-server", nd.args...) }

// streamSettled waits until stream has a leader and two current replicas,
// and returns its leader's server name.
func streamSettled(t testing.TB, js jetstream.JetStream, stream string) string {
	t.Helper()
	var leader string
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		ci := s.CachedInfo().Cluster
		if ci == nil || ci.Leader == "" || len(ci.Replicas) != 2 {
			return false
		}
		for _, r := range ci.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		leader = ci.Leader
		return true
	}, 90*time.Second, 50*time.Millisecond, "stream %s: no leader with 2 current replicas", stream)
	return leader
}

// reportSpread reports the median of xs as metric unit, and logs the
// median, min, max and every value.
func reportSpread(b *testing.B, xs []float64, unit string) {
	lo, med, hi := spread(xs)
	b.ReportMetric(med, unit)
	b.Logf("%s: median %.3f, min %.3f, max %.3f (%d: %.3f)", unit, med, lo, hi, len(xs), xs)
}

// logMachine logs what the figures ran on.
func logMachine(b *testing.B) {
	b.Logf("machine: %s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}

// BenchmarkClusterThroughput: e2e no-op jobs/s on an R3 cluster of three
// nats-server processes, as a ratio of the raw R3 work queue measured in
// the same run. One conductord (--nats-url, its job stream R3), one
// workerd with 2 noop workers; the baseline an R3 work-queue stream on the
// same servers, published to asynchronously while 2 pull consumers ack
// (the shape of BenchmarkEndToEnd's, on one connection). BENCH_CLUSTER_PAIRS
// pairs, the order turning from pair to pair, of BENCH_CLUSTER_JOBS each.
func BenchmarkClusterThroughput(b *testing.B) {
	for range b.N {
		np := startNATSProcs(b, 3)
		c := onNATS(b, np.urls())
		w := start(b, "workerd", "--conductor", np.urls(), "--host-id", "h1",
			"--pool", "name=noop,count=2,cmd="+filepath.Join(bin, "noop-worker"))
		c.waitWorkers("noop", 2)
		nc, err := nats.Connect(np.urls())
		require.NoError(b, err)
		b.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		require.NoError(b, err)
		space, _ := subject.New("default")
		streamSettled(b, js, space.JobStream()) // R3, as --nats-url makes it
		stream := rawR3Stream(b, js)

		pids := map[string]int{"conductord": c.conductor.cmd.Process.Pid, "workerd": w.cmd.Process.Pid}
		for _, nd := range np.nodes {
			pids["nats-server "+nd.name] = nd.p.cmd.Process.Pid
		}
		// Each phase's CPU per message, by process (with the default
		// BENCH_CLUSTER_JOBS: logUsage divides by benchJobs).
		measured := func(phase string, run func() float64) float64 {
			before := usages(pids)
			rate := run()
			for name, u := range usages(pids) {
				logUsage(b, phase, name, before[name], u)
			}
			return rate
		}
		rawRun := func() float64 { return rawR3(b, js, stream, clusterJobs(b)) }
		e2eRun := func() float64 { r, _ := endToEndN(b, nc, js, "noop", clusterJobs(b)); return r }

		var raws, e2es, ratios []float64
		for i := range clusterPairs(b) {
			var raw, e2e float64
			if i%2 == 0 {
				raw = measured("raw", rawRun)
				e2e = measured("e2e", e2eRun)
			} else {
				e2e = measured("e2e", e2eRun)
				raw = measured("raw", rawRun)
			}
			b.Logf("pair %d: raw R3 %.0f msgs/s, e2e %.0f jobs/s, ratio %.3f", i+1, raw, e2e, e2e/raw)
			raws, e2es, ratios = append(raws, raw), append(e2es, e2e), append(ratios, e2e/raw)
		}
		logMachine(b)
		reportSpread(b, raws, "raw_r3_msgs/s")
		reportSpread(b, e2es, "e2e_r3_jobs/s")
		reportSpread(b, ratios, "ratio")
	}
}

// rawR3Stream makes the baseline's R3 work-queue stream (file storage, as
// the job stream).
func rawR3Stream(b *testing.B, js jetstream.JetStream) jetstream.Stream {
	stream, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "bench-raw3", Subjects: []string{"bench.raw3"}, Retention: jetstream.WorkQueuePolicy, Replicas: 3,
	})
	require.NoError(b, err)
	return stream
}

// rawR3 publishes n messages asynchronously to the baseline's stream while
// 2 pull consumers (Consume, default batch) ack them, and returns msgs/s.
// Each run has a durable consumer of its own, deleted after it: the pull
// requests a stopped Consume left at the servers (they live 30 s) would
// take the next run's messages to an inbox nobody reads, and those would
// come back only after the ack wait (a run of 666 msgs/s, seen once).
func rawR3(b *testing.B, js jetstream.JetStream, stream jetstream.Stream, n int) float64 {
	ctx := context.Background()
	name := fmt.Sprintf("raw3-%d", time.Now().UnixNano())
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(b, err)
	defer func() { require.NoError(b, stream.DeleteConsumer(ctx, name)) }()
	return drainRaw(b, js, cons, "bench.raw3", n, "raw R3")
}

// BenchmarkClusterScaling: jobs/s of a 2 ms job (noop-worker -delay 2ms)
// with 1, 2 and 3 workerd hosts of 2 workers each, on the R3 cluster.
// Every host is up throughout: host h1 serves types scale1, scale2 and
// scale3, h2 scale2 and scale3, h3 scale3, so that a run of scaleK's jobs
// has K hosts; BENCH_CLUSTER_RUNS rounds of K = 1, 2, 3, each of
// 3,000 x K jobs published at once. Efficiency is rate(K) / (K x rate(1)),
// round by round.
func BenchmarkClusterScaling(b *testing.B) {
	for range b.N {
		np := startNATSProcs(b, 3)
		c := onNATS(b, np.urls())
		pool := func(k int) string {
			return fmt.Sprintf("name=scale%d,count=2,cmd=%s -delay 2ms", k, filepath.Join(bin, "noop-worker"))
		}
		for h := 1; h <= 3; h++ {
			args := []string{"--conductor", np.urls(), "--host-id", fmt.Sprintf("h%d", h)}
			for k := h; k <= 3; k++ {
				args = append(args, "--pool", pool(k))
			}
			start(b, "workerd", args...)
		}
		for k := 1; k <= 3; k++ {
			c.waitWorkers(fmt.Sprintf("scale%d", k), 2*k)
		}
		nc, err := nats.Connect(np.urls())
		require.NoError(b, err)
		b.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		require.NoError(b, err)

		rates := make([][]float64, 4)
		var eff2, eff3 []float64
		for range clusterRuns(b) {
			var r [4]float64
			for k := 1; k <= 3; k++ {
				r[k], _ = endToEndN(b, nc, js, fmt.Sprintf("scale%d", k), 3000*k)
				rates[k] = append(rates[k], r[k])
			}
			eff2, eff3 = append(eff2, r[2]/(2*r[1])), append(eff3, r[3]/(3*r[1]))
			b.Logf("round: 1 host %.0f, 2 hosts %.0f, 3 hosts %.0f jobs/s; efficiency 2: %.2f, 3: %.2f", r[1], r[2], r[3], r[2]/(2*r[1]), r[3]/(3*r[1]))
		}
		logMachine(b)
		for k := 1; k <= 3; k++ {
			reportSpread(b, rates[k], fmt.Sprintf("hosts%d_jobs/s", k))
		}
		reportSpread(b, eff2, "efficiency2")
		reportSpread(b, eff3, "efficiency3")
	}
}
