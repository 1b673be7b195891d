package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
)

// BenchmarkJobTypes measures the cost of many job types (issue 19: 100
// types against 1 at the same total, goal >= 0.8): the same total of no-op
// jobs (BENCH_TYPES_JOBS, default 100000: a phase of a few seconds, long
// enough for what a second hides, such as conductord's bookkeeping of the
// ends' acks, which settle over 5 s) published on NATS, spread evenly
// over the types of a setup, counted by their succeeded events.
//
// 100 pools cannot hold the 2 workers of the usual 1-type figure: each
// needs a worker at least. So the fair comparison keeps the processes
// equal, and the usual figure is context:
//   - many: one workerd with 100 pools (types t00…t99) of 1 noop-worker
//     each: 100 worker processes;
//   - one100: one workerd with 1 pool (type one100) of 100 noop-workers:
//     the same 100 processes, one type (the baseline of the goal's ratio,
//     many/one100);
//   - one2: one workerd with 1 pool (type one2) of 2 noop-workers, as
//     BenchmarkEndToEnd's e2e (many/one2 is reported too);
//   - idle99: one workerd with one2's shape (type i00, 2 noop-workers)
//     beside 99 pools of types i01…i99 served and idle (1 worker each, no
//     job): what idle pools on its host cost a busy type (idle99/one2).
//     Their consumers, and those of many's types, stay on the stream, so
//     from the second round on one2 runs beside them too: what idle
//     consumers cost is BenchmarkIdleConsumers' measure.
//
// BENCH_PAIRS rounds (default 5) of one2, one100, many, idle99,
// interleaved; each phase starts its workerd (a host id of its own), waits
// for its workers and its types' consumers, runs the jobs and stops it,
// so that no setup's idle processes weigh on another's. Reported for each setup: jobs/s (median, min, max), the CPU
// per job of conductord and workerd, workerd's RSS and its workers' in all,
// and the consumers on the job stream: the setup's (each type's normal
// one: its jobs are all normal) and the stream's total; and the ratios of
// each round.
//
//	go test -run '^$' -bench BenchmarkJobTypes -benchtime 1x ./integration/
func BenchmarkJobTypes(b *testing.B) {
	n := envInt(b, "BENCH_TYPES_JOBS", 100000)
	noop := filepath.Join(bin, "noop-worker")
	many := typesSetup{name: "many", workers: 100}
	for i := range 100 {
		t := fmt.Sprintf("t%02d", i)
		many.types = append(many.types, t)
		many.pools = append(many.pools, fmt.Sprintf("name=%s,count=1,cmd=%s", t, noop))
	}
	// idle99: one2's type and workers beside 99 types served and idle
	// (a worker each, no job): what idle types cost a busy one.
	idle := typesSetup{name: "idle99", workers: 101, busy: []string{"i00"}}
	for i := range 100 {
		t, count := fmt.Sprintf("i%02d", i), 1
		if i == 0 {
			count = 2
		}
		idle.types = append(idle.types, t)
		idle.pools = append(idle.pools, fmt.Sprintf("name=%s,count=%d,cmd=%s", t, count, noop))
	}
	setups := []typesSetup{
		{name: "one2", workers: 2, types: []string{"one2"}, pools: []string{"name=one2,count=2,cmd=" + noop}},
		{name: "one100", workers: 100, types: []string{"one100"}, pools: []string{"name=one100,count=100,cmd=" + noop}},
		many,
		idle,
	}
	if only := os.Getenv("BENCH_TYPES_SETUPS"); only != "" {
		setups = slices.DeleteFunc(setups, func(s typesSetup) bool { return !slices.Contains(strings.Split(only, ","), s.name) })
	}
	for range b.N {
		c, nc, js := benchCluster(b)

		phases := map[string][]typesPhase{}
		for round := range benchPairs(b) {
			for _, s := range setups {
				p := s.run(b, c, nc, js, round, n)
				phases[s.name] = append(phases[s.name], p)
				b.Logf("round %d %-6s: %6.0f jobs/s; cpu per job µs: conductord %.0f, workerd %.0f; workerd RSS %.1f MB, its workers' %.1f MB; consumers: %d of its types, %d on the stream; workers up in %v, workerd stopped in %v",
					round+1, s.name, p.rate, p.conductordCPU, p.workerdCPU, p.workerdMB, p.workersMB, p.consumers, p.streamConsumers, p.up.Round(time.Millisecond), p.down.Round(time.Millisecond))
			}
		}

		rates := func(name string) []float64 {
			var xs []float64
			for _, p := range phases[name] {
				xs = append(xs, p.rate)
			}
			return xs
		}
		ratios := func(num, den string) []float64 {
			var xs []float64
			for i := range phases[num] {
				xs = append(xs, phases[num][i].rate/phases[den][i].rate)
			}
			return xs
		}
		logMachine(b)
		var table []string
		for _, s := range setups {
			ps := phases[s.name]
			pick := func(f func(typesPhase) float64) float64 {
				var xs []float64
				for _, p := range ps {
					xs = append(xs, f(p))
				}
				return median(xs)
			}
			rs := rates(s.name)
			lo, med, hi := spread(rs)
			reportMMM(b, s.name+"_jobs/s", rs, 1)
			cond, wd := pick(func(p typesPhase) float64 { return p.conductordCPU }), pick(func(p typesPhase) float64 { return p.workerdCPU })
			wdMB, wsMB := pick(func(p typesPhase) float64 { return p.workerdMB }), pick(func(p typesPhase) float64 { return p.workersMB })
			b.ReportMetric(cond, s.name+"_conductord_cpu_us/job")
			b.ReportMetric(wd, s.name+"_workerd_cpu_us/job")
			b.ReportMetric(wdMB, s.name+"_workerd_MB")
			b.ReportMetric(float64(ps[0].consumers), s.name+"_consumers")
			ends := pick(func(p typesPhase) float64 { return p.ends })
			b.ReportMetric(ends, s.name+"_ends/100jobs")
			table = append(table, fmt.Sprintf("%-7s %5d %3d %8.0f %8.0f %8.0f %9.0f %8.0f %8.1f %9.1f %6d %6d %5.1f",
				s.name, len(s.types), s.workers, med, lo, hi, cond, wd, wdMB, wsMB, ps[0].consumers, ps[len(ps)-1].streamConsumers, ends))
		}
		goal := func(xs []float64) string {
			if median(xs) >= 0.8 {
				return "meets goal >= 0.8"
			}
			return "MISSES goal >= 0.8"
		}
		var lines []string
		for _, r := range []struct{ num, den, what string }{
			{"many", "one100", "same processes"},
			{"many", "one2", "the usual 2 workers"},
			{"idle99", "one2", "one busy type beside 99 idle ones"},
		} {
			if len(phases[r.num]) == 0 || len(phases[r.den]) == 0 {
				continue // a setup left out (BENCH_TYPES_SETUPS)
			}
			xs := ratios(r.num, r.den)
			reportMMM(b, "ratio_"+r.num+"/"+r.den, xs, 1)
			lo, med, hi := spread(xs)
			lines = append(lines, fmt.Sprintf("ratio %s/%s (%s): median %.3f, min %.3f, max %.3f  %s", r.num, r.den, r.what, med, lo, hi, goal(xs)))
		}
		b.Logf("job types, %d jobs per phase, %d rounds (medians; jobs/s median, min, max; CPU µs per job; ends messages per 100 jobs):\n%-7s %5s %3s %8s %8s %8s %9s %8s %8s %9s %6s %6s %5s\n%s\n%s",
			n, benchPairs(b), "setup", "types", "wks", "jobs/s", "min", "max", "cond cpu", "wd cpu", "wd MB", "wks MB", "cons", "stream", "ends",
			strings.Join(table, "\n"), strings.Join(lines, "\n"))
	}
}

// typesSetup is one workerd's pools, and the job types they serve.
type typesSetup struct {
	name    string
	types   []string
	busy    []string // the types the jobs go to; nil: every type
	pools   []string
	workers int
}

// typesPhase is what one run of a setup measured.
type typesPhase struct {
	rate                      float64
	conductordCPU, workerdCPU float64 // µs per job
	workerdMB, workersMB      float64
	consumers                 int           // the job stream's consumers of the setup's types
	streamConsumers           int           // the job stream's consumers in all
	ends                      float64       // messages on the ends stream per 100 jobs
	up, down                  time.Duration // workerd's start to its workers up and its types' consumers made; its stop
}

// run starts the setup's workerd, runs n jobs through it, and stops it.
func (s typesSetup) run(b *testing.B, c *cluster, nc *nats.Conn, js jetstream.JetStream, round, n int) typesPhase {
	host := fmt.Sprintf("%s-%d", s.name, round+1)
	t0 := time.Now()
	w := c.workerd(host, s.pools...)
	workers := waitHostWorkers(b, c, host, s.workers)
	// A worker is up before its pool's consumer may be: the jobs of a type
	// with none wait for it, and the phase would time the pools' start.
	require.Eventually(b, func() bool { return normalConsumers(b, js, s.types) == len(s.types) },
		time.Minute, 10*time.Millisecond, "the consumers of %s's types", s.name)
	up := time.Since(t0)
	pids := map[string]int{"conductord": c.conductor.cmd.Process.Pid, "workerd": w.cmd.Process.Pid}
	before := usages(pids)
	ends0 := endsSeq(b, js)
	payload := []byte(`{"n":1}`)
	busy := s.busy
	if busy == nil {
		busy = s.types
	}
	rate := runSized(b, nc, newSizedPub(b, nc, len(payload)), busy, n, payload)
	after := usages(pids)
	p := typesPhase{
		rate:          rate,
		conductordCPU: cpuPerJob(before["conductord"], after["conductord"], n),
		workerdCPU:    cpuPerJob(before["workerd"], after["workerd"], n),
		workerdMB:     rssMB(w.cmd.Process.Pid),
		ends:          float64(endsSeq(b, js)-ends0) * 100 / float64(n),
	}
	for _, pid := range workers {
		p.workersMB += rssMB(pid)
	}
	p.consumers, p.streamConsumers = jobConsumers(b, js, s.types)
	t1 := time.Now()
	w.stop(b, 20*time.Second)
	p.up, p.down = up, time.Since(t1)
	return p
}

// waitHostWorkers waits until n workers of host are ready or busy, and
// returns their pids.
func waitHostWorkers(b *testing.B, c *cluster, host string, n int) []int {
	b.Helper()
	var pids []int
	require.Eventually(b, func() bool {
		pids = pids[:0]
		for _, w := range c.workers() {
			if w.Host == host && (w.State == "ready" || w.State == "busy") && w.PID > 0 {
				pids = append(pids, w.PID)
			}
		}
		return len(pids) >= n
	}, 2*time.Minute, 50*time.Millisecond, "want %d workers of %s up", n, host)
	return pids
}

// normalConsumers counts the normal-priority consumers of types on the
// job stream.
func normalConsumers(b *testing.B, js jetstream.JetStream, types []string) int {
	space, _ := subject.New("default")
	n := 0
	for _, name := range consumerNames(b, js) {
		if t, p := space.ParseConsumer(name); p == "normal" && slices.Contains(types, t) {
			n++
		}
	}
	return n
}

// jobConsumers counts the job stream's consumers of types, and all of them.
func jobConsumers(b *testing.B, js jetstream.JetStream, types []string) (ours, all int) {
	space, _ := subject.New("default")
	for _, name := range consumerNames(b, js) {
		all++
		if t, _ := space.ParseConsumer(name); slices.Contains(types, t) {
			ours++
		}
	}
	return ours, all
}

// endsSeq is the last sequence of the ends stream: the ends messages
// published so far.
func endsSeq(b *testing.B, js jetstream.JetStream) uint64 {
	space, _ := subject.New("default")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, space.EndsStream())
	require.NoError(b, err)
	return stream.CachedInfo().State.LastSeq
}

// consumerNames lists the job stream's consumers.
func consumerNames(b *testing.B, js jetstream.JetStream) []string {
	space, _ := subject.New("default")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, space.JobStream())
	require.NoError(b, err)
	var all []string
	names := stream.ConsumerNames(ctx)
	for name := range names.Name() {
		all = append(all, name)
	}
	require.NoError(b, names.Err())
	return all
}

// BenchmarkIdleConsumers measures what idle consumers on the job stream
// cost a busy type: the server asks every consumer of the stream, on
// every ack, whether it still wants the message. BENCH_PAIRS pairs
// (default 5) of one2's phase (1 type, a pool of 2 noop-workers,
// BENCH_TYPES_JOBS jobs) with its consumer alone on the stream, then with
// BENCH_IDLE_CONSUMERS (default 200) consumers of other types beside it,
// made straight on the stream and removed after, as a fleet's served and
// idle types keep theirs.
//
//	go test -run '^$' -bench BenchmarkIdleConsumers -benchtime 1x ./integration/
func BenchmarkIdleConsumers(b *testing.B) {
	n := envInt(b, "BENCH_TYPES_JOBS", 100000)
	idle := envInt(b, "BENCH_IDLE_CONSUMERS", 200)
	noop := filepath.Join(bin, "noop-worker")
	one2 := typesSetup{name: "one2", workers: 2, types: []string{"one2"}, pools: []string{"name=one2,count=2,cmd=" + noop}}
	space, _ := subject.New("default")
	for range b.N {
		c, nc, js := benchCluster(b)
		ctx := context.Background()
		var alone, beside []float64
		var aloneCPU, besideCPU []float64
		for round := range benchPairs(b) {
			p := one2.run(b, c, nc, js, 2*round, n)
			alone, aloneCPU = append(alone, p.rate), append(aloneCPU, p.conductordCPU)
			for i := range idle {
				typ := fmt.Sprintf("x%03d", i)
				_, err := js.CreateConsumer(ctx, space.JobStream(), jetstream.ConsumerConfig{
					Durable: space.Consumer(typ), FilterSubject: space.Job(typ), AckPolicy: jetstream.AckExplicitPolicy,
				})
				require.NoError(b, err)
			}
			p = one2.run(b, c, nc, js, 2*round+1, n)
			beside, besideCPU = append(beside, p.rate), append(besideCPU, p.conductordCPU)
			for i := range idle {
				require.NoError(b, js.DeleteConsumer(ctx, space.JobStream(), space.Consumer(fmt.Sprintf("x%03d", i))))
			}
			b.Logf("round %d: one2 alone %6.0f jobs/s (conductord %.0f µs a job); beside %d idle consumers %6.0f jobs/s (conductord %.0f µs a job)",
				round+1, alone[round], aloneCPU[round], idle, beside[round], besideCPU[round])
		}
		ratios := make([]float64, len(alone))
		for i := range alone {
			ratios[i] = beside[i] / alone[i]
		}
		reportMMM(b, "alone_jobs/s", alone, 1)
		reportMMM(b, "beside_jobs/s", beside, 1)
		reportMMM(b, "ratio_beside/alone", ratios, 1)
		b.ReportMetric(median(aloneCPU), "alone_conductord_cpu_us/job")
		b.ReportMetric(median(besideCPU), "beside_conductord_cpu_us/job")
	}
}
