package conductor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/logtail"
	"github.com/conductor-run/conductor/internal/metrics"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// The cost of the operator's surfaces (docs/benchmarks.md, "Issue 17"):
// the console's sampler, a /metrics scrape and the log tail. Each
// benchmark times a surface and its baseline in the same iterations, in
// an order that turns from one iteration to the next, so that a slow
// spell of the machine hits both; it reports both and their ratio.
// scripts/bench-operator.sh runs them in interleaved rounds.

// Shape of the cluster the console and scrape benchmarks read: each job
// type has a job queued at each priority and its consumers (as a host
// that serves it makes them), and opHosts hosts announce, by heartbeat,
// opWorkers workers of every type.
const (
	opHosts   = 2
	opWorkers = 2
)

// opTypes are the numbers of job types the console and scrape benchmarks
// run with: 1 and 100, or those of $CONDUCTOR_BENCH_TYPES (e.g. "500").
func opTypes(b *testing.B) []int {
	env := os.Getenv("CONDUCTOR_BENCH_TYPES")
	if env == "" {
		return []int{1, 100}
	}
	var out []int
	for f := range strings.SplitSeq(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		require.NoError(b, err, "CONDUCTOR_BENCH_TYPES")
		out = append(out, n)
	}
	return out
}

// opCluster is a conductor and a connection of the benchmark's to it.
type opCluster struct {
	c    *conductor.Conductor
	nc   *nats.Conn
	srv  *httptest.Server
	http *http.Client
}

// startOpCluster starts a conductor with cfg (on a temp dir, embedded
// NATS, served by an httptest server) and, for types > 0, queues jobs of
// types types t000..., makes their consumers and announces the hosts.
// Everything stops with b.
func startOpCluster(b *testing.B, types int, cfg conductor.Config) *opCluster {
	b.Helper()
	cfg.DataDir = b.TempDir()
	cfg.NATSListen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	c, err := conductor.New(cfg)
	require.NoError(b, err)
	require.NoError(b, c.Start(context.Background()))
	b.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(b, err)
	b.Cleanup(nc.Close)
	srv := httptest.NewServer(c.Handler())
	b.Cleanup(srv.Close)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	b.Cleanup(hc.CloseIdleConnections)
	cl := &opCluster{c: c, nc: nc, srv: srv, http: hc}
	if types == 0 {
		return cl
	}

	ctx := context.Background()
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	space, err := subject.New("default")
	require.NoError(b, err)
	names := make([]string, types)
	for i := range names {
		names[i] = fmt.Sprintf("t%03d", i)
		for _, p := range []client.Priority{client.PriorityHigh, client.PriorityNormal, client.PriorityLow} {
			_, err := c.Client().Submit(ctx, names[i], i, client.WithPriority(p))
			require.NoError(b, err)
		}
		require.NoError(b, hostsvc.MakeConsumers(ctx, js, space, names[i], 0))
	}
	for h := range opHosts {
		data, err := json.Marshal(opFakeHost(fmt.Sprintf("h%d", h+1), names))
		require.NoError(b, err)
		require.NoError(b, nc.Publish(space.Host(fmt.Sprintf("h%d", h+1)), data))
	}
	require.Eventually(b, func() bool { return len(c.Client().HeardHosts()) == opHosts },
		10*time.Second, 5*time.Millisecond, "the hosts' heartbeats not heard")
	return cl
}

// opFakeHost is the heartbeat of a host running every type of types with
// opWorkers workers each, with run and wait histograms and a counter per
// worker, as a busy workerd sends it. Its interval (a minute) keeps it
// live for the benchmark's length.
func opFakeHost(host string, types []string) client.Host {
	hist := func() *client.Histogram {
		c := make([]uint64, len(client.HistogramBounds)+1)
		c[2], c[3] = 100, 20
		return &client.Histogram{Counts: c, Sum: 1.2}
	}
	started := time.Now().Add(-time.Hour).Truncate(time.Second)
	hb := client.Host{Host: host, PID: 4242, Started: started, Interval: client.Duration(time.Minute), Lookups: hist()}
	for _, typ := range types {
		hb.Pools = append(hb.Pools, client.HostPool{Name: typ, Count: opWorkers, Protocol: "channel", State: "running",
			Cmd: []string{"/usr/local/bin/" + typ + "-worker"}, Run: hist(), Wait: hist()})
		for i := range opWorkers {
			hb.Workers = append(hb.Workers, client.Worker{Host: host, Pool: typ, Index: i, PID: 10_000 + len(hb.Workers),
				State: "ready", RSS: 12 << 20, JobsDone: 120, Started: started, CPU: client.Duration(3 * time.Second),
				Version: 1, Counters: map[string]float64{"mails": 7}})
		}
	}
	return hb
}

// get reads path of cl's HTTP API to its end and returns the bytes read.
func (cl *opCluster) get(b *testing.B, path string) int {
	resp, err := cl.http.Get(cl.srv.URL + path)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d, %v", path, resp.StatusCode, err)
	}
	return int(n)
}

// opStep is one of the things a benchmark times each iteration: prep, if
// set, is not timed.
type opStep struct {
	prep, run func()
}

// opTimes are the durations, wall and CPU (of the whole process: the
// embedded NATS server's work included), of each run of one step.
type opTimes struct{ wall, cpu []time.Duration }

// opMeasure runs every step once per iteration of b, starting each
// iteration one step further on, and returns each step's times.
func opMeasure(b *testing.B, steps ...opStep) []opTimes {
	out := make([]opTimes, len(steps))
	i := 0
	for b.Loop() {
		for k := range steps {
			j := (i + k) % len(steps)
			if steps[j].prep != nil {
				steps[j].prep()
			}
			c0 := opCPU()
			t0 := time.Now()
			steps[j].run()
			out[j].wall = append(out[j].wall, time.Since(t0))
			out[j].cpu = append(out[j].cpu, opCPU()-c0)
		}
		i++
	}
	return out
}

// opCPU is the user and system time the process has used.
func opCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// opMean and opQuantile are in µs.
func opMean(ds []time.Duration) float64 {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return float64(sum) / float64(len(ds)) / 1e3
}

func opQuantile(ds []time.Duration, q float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[min(len(s)-1, int(q*float64(len(s))))]) / 1e3
}

// BenchmarkConsoleSample: one sample of the console's sampler (read the
// pools and hosts, make the snapshot, encode it, keep its points), against
// c.Pools alone (what GET /v1/pools reads), with 1 and 100 job types
// queued on 2 hosts of 2 workers a type. core-% is the share of one core
// an open console takes at one sample a second (CPU, the process's: the
// embedded NATS server's included); idle-core-% the sampler's with no
// console open (one sample in 5 s).
func BenchmarkConsoleSample(b *testing.B) {
	for _, types := range opTypes(b) {
		b.Run(fmt.Sprintf("types=%d", types), func(b *testing.B) {
			cl := startOpCluster(b, types, conductor.Config{})
			ctx := context.Background()
			sample := conductor.ConsoleSampler(cl.c)
			var frame int
			d := opMeasure(b,
				opStep{run: func() {
					if _, err := cl.c.Pools(ctx); err != nil {
						b.Fatal(err)
					}
				}},
				opStep{run: func() { frame = sample(ctx, time.Now()) }},
			)
			pools, smp := d[0], d[1]
			b.ReportMetric(opMean(smp.wall), "sample-µs")
			b.ReportMetric(opMean(pools.wall), "pools-µs")
			b.ReportMetric(opMean(smp.wall)/opMean(pools.wall), "ratio")
			b.ReportMetric(opMean(smp.cpu), "sample-cpu-µs")
			b.ReportMetric(opMean(pools.cpu), "pools-cpu-µs")
			b.ReportMetric(opMean(smp.cpu)/1e6*100, "core-%")
			b.ReportMetric(opMean(smp.cpu)/5e6*100, "idle-core-%")
			b.ReportMetric(float64(frame), "frame-B")
		})
	}
}

// BenchmarkScrape: GET /metrics as Prometheus makes it (each scrape more
// than a second after the one before, so conductor_queue_oldest_seconds
// reads the queues: a collector of its own each time, its cache empty),
// a scrape repeated at once (the queues' reading cached, 1 s), and, as
// baselines, GET /v1/pools and GET /healthz, with 1 and 100 job types
// queued on 2 hosts of 2 workers a type.
func BenchmarkScrape(b *testing.B) {
	for _, types := range opTypes(b) {
		b.Run(fmt.Sprintf("types=%d", types), func(b *testing.B) {
			var c *conductor.Conductor
			src := metrics.ConductorSource(&c, false)
			// metrics.Handler's registry, made afresh for each cold scrape.
			goColl := collectors.NewGoCollector()
			procColl := collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
			fresh := func() http.Handler {
				reg := prometheus.NewRegistry()
				reg.MustRegister(metrics.NewCollector(src), goColl, procColl)
				return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
			}
			var cold atomic.Pointer[http.Handler]
			warm := fresh()
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("warm") != "" {
					warm.ServeHTTP(w, r)
					return
				}
				(*cold.Load()).ServeHTTP(w, r)
			})
			cl := startOpCluster(b, types, conductor.Config{Metrics: handler})
			c = cl.c
			h := fresh()
			cold.Store(&h)
			var body int
			d := opMeasure(b,
				opStep{prep: func() { h := fresh(); cold.Store(&h) }, run: func() { body = cl.get(b, "/metrics") }},
				opStep{run: func() { cl.get(b, "/metrics?warm=1") }},
				opStep{run: func() { cl.get(b, "/v1/pools") }},
				opStep{run: func() { cl.get(b, "/healthz") }},
			)
			scrape, warmD, pools, health := d[0], d[1], d[2], d[3]
			b.ReportMetric(opMean(scrape.wall), "scrape-µs")
			b.ReportMetric(opMean(warmD.wall), "scrape-cached-µs")
			b.ReportMetric(opMean(pools.wall), "pools-µs")
			b.ReportMetric(opMean(health.wall), "healthz-µs")
			b.ReportMetric(opMean(scrape.wall)/opMean(pools.wall), "ratio-pools")
			b.ReportMetric(opMean(scrape.wall)/opMean(health.wall), "ratio-healthz")
			b.ReportMetric(opMean(scrape.cpu), "scrape-cpu-µs")
			b.ReportMetric(float64(body), "body-B")
		})
	}
}

// BenchmarkLogTail: GET /v1/pools/{name}/logs?tail=100 of a pool whose one
// host (a workerd agent in this process, its worker a shell that printed
// 1,000 lines) keeps 1,000 lines, against the raw NATS request/reply
// between the same two connections (conductord's asks, the host's
// answers at once), and the tail asked over NATS alone (logtail.Ask, what
// the HTTP handler waits for before it merges and writes). p50 and p99 in
// µs.
func BenchmarkLogTail(b *testing.B) {
	const pool, lines = "printer", 1000
	cl := startOpCluster(b, 0, conductor.Config{})
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "2026-12-05T04:00:00Z INFO the benchmark's worker printed its line number $i"; i=$((i+1)); done; exec sleep 3600`, lines)
	a, err := agent.New(agent.Config{
		Conn: cl.nc, Host: "h1", Logger: slog.New(slog.DiscardHandler),
		Pools: []broker.Spec{{Name: pool, Count: 1, Protocol: broker.ProtocolNone, KillTimeout: 2 * time.Second,
			Cmd: []string{"/bin/sh", "-c", script}}},
	})
	require.NoError(b, err)
	require.NoError(b, a.Start(context.Background()))
	b.Cleanup(a.Stop)

	space, err := subject.New("default")
	require.NoError(b, err)
	ctx := context.Background()
	ask := func(n int) []logtail.Answer {
		return logtail.Ask(ctx, conductor.NATSConn(cl.c), space, []string{"h1"}, pool, n)
	}
	require.Eventually(b, func() bool {
		ans := ask(lines)
		return len(ans) == 1 && len(ans[0].Lines) == lines
	}, 30*time.Second, 20*time.Millisecond, "the host does not keep %d lines", lines)

	// The raw round trip: the host's connection answers at once.
	sub, err := cl.nc.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
	require.NoError(b, err)
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(b, cl.nc.Flush())
	path := "/v1/pools/" + pool + "/logs?tail=100"
	require.Equal(b, 100, opTailLines(b, cl, path))

	d := opMeasure(b,
		opStep{run: func() { cl.get(b, path) }},
		opStep{run: func() {
			if ans := ask(100); len(ans[0].Lines) != 100 {
				b.Fatal(ans[0].Note)
			}
		}},
		opStep{run: func() {
			if _, err := conductor.NATSConn(cl.c).Request("bench.echo", []byte("ping"), 2*time.Second); err != nil {
				b.Fatal(err)
			}
		}},
	)
	tail, natsTail, raw := d[0].wall, d[1].wall, d[2].wall
	b.ReportMetric(opQuantile(tail, 0.5), "tail-p50-µs")
	b.ReportMetric(opQuantile(tail, 0.99), "tail-p99-µs")
	b.ReportMetric(opQuantile(natsTail, 0.5), "nats-tail-p50-µs")
	b.ReportMetric(opQuantile(raw, 0.5), "raw-p50-µs")
	b.ReportMetric(opQuantile(raw, 0.99), "raw-p99-µs")
	b.ReportMetric(opQuantile(tail, 0.5)/opQuantile(raw, 0.5), "ratio-p50")
	b.ReportMetric(opQuantile(tail, 0.99)/opQuantile(raw, 0.99), "ratio-p99")
	b.ReportMetric(opMean(d[0].cpu), "tail-cpu-µs")
}

// opTailLines counts the lines of GET path.
func opTailLines(b *testing.B, cl *opCluster, path string) int {
	resp, err := cl.http.Get(cl.srv.URL + path)
	require.NoError(b, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(b, err)
	return bytes.Count(data, []byte("\n"))
}
