package integration

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/pkg/client"
)

// soakPlan is what a soak run does; make soak sets SOAK_DURATION.
type soakPlan struct {
	duration time.Duration // SOAK_DURATION: how long the load lasts
	every    time.Duration // SOAK_INTERVAL: the time between two samples, default 1m
	rate     int           // SOAK_RATE: squares jobs per second, default 200
	warmup   int           // SOAK_WARMUP: samples left out of the slopes, default 2 (the start and the first interval)
}

// TestSoak runs a steady load of squares jobs on conductord and two
// workerd hosts for SOAK_DURATION, samples each process every
// SOAK_INTERVAL (RSS, goroutines, open fds) and the JetStream storage, and
// at the end prints each figure's least-squares slope over the samples
// after the warm-up, per hour, and whether it is flat (see flatness). It
// fails if a job was lost, or a figure grows: any but the store and
// conductord's memory, which grow with the job states kept by design and
// are bounded per job instead (see perJob). Goroutines are read
// from /metrics for conductord and from /debug/pprof for workerd when the
// binaries are built with -tags pprof, as make soak builds them; without
// it workerd's OS threads are counted instead, and said so.
func TestSoak(t *testing.T) {
	plan := soakPlan{every: time.Minute, rate: 200, warmup: 2}
	v := os.Getenv("SOAK_DURATION")
	if v == "" {
		t.Skip("TestSoak runs only with SOAK_DURATION set: make soak (docs/reliability.md, \"Soak\")")
	}
	var err error
	plan.duration, err = time.ParseDuration(v)
	require.NoError(t, err, "SOAK_DURATION")
	if v := os.Getenv("SOAK_INTERVAL"); v != "" {
		plan.every, err = time.ParseDuration(v)
		require.NoError(t, err, "SOAK_INTERVAL")
	}
	if v := os.Getenv("SOAK_RATE"); v != "" {
		plan.rate, err = strconv.Atoi(v)
		require.NoError(t, err, "SOAK_RATE")
	}
	if v := os.Getenv("SOAK_WARMUP"); v != "" {
		plan.warmup, err = strconv.Atoi(v)
		require.NoError(t, err, "SOAK_WARMUP")
	}
	pprof := strings.Contains(os.Getenv("CONDUCTOR_BUILD_TAGS"), "pprof")
	t.Logf("soak plan: %d jobs/s for %s, a sample every %s, %d samples of warm-up; workerd goroutines from pprof: %v",
		plan.rate, plan.duration, plan.every, plan.warmup, pprof)

	c := newCluster(t)
	procs := []soakProc{{name: "conductord", proc: c.conductor, metrics: c.url("/metrics")}}
	for _, host := range []string{"host-a", "host-b"} {
		sp := soakProc{name: "workerd " + host}
		if pprof {
			addr := freeAddr(t)
			// start reads BENCH_ENV_WORKERD when it builds the command.
			t.Setenv("BENCH_ENV_WORKERD", names.EnvPprofPrefix+"WORKERD="+addr)
			sp.pprof = "http://" + addr + "/debug/pprof/goroutine?debug=1"
		}
		sp.proc = c.workerd(host, squares(2))
		procs = append(procs, sp)
	}
	c.waitWorkers("squares", 4)
	ev := watchEvents(t, c, "squares", -1)
	cl := c.goClient()
	js, err := jetstream.New(cl.Conn())
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), plan.duration+5*time.Minute)
	defer cancel()
	var submitted atomic.Int64
	var ids sync.Map // a few job ids with their payloads, checked at the end
	load, stopLoad := context.WithCancel(ctx)
	var submitters sync.WaitGroup
	t0 := time.Now()
	for w := range 8 {
		submitters.Go(func() {
			for k := w; ; k += 8 {
				// Pacing the load, not waiting for an event.
				dueAt := t0.Add(time.Duration(int64(time.Second) * int64(k) / int64(plan.rate)))
				select {
				case <-time.After(time.Until(dueAt)):
				case <-load.Done():
					return
				}
				id, err := cl.Submit(ctx, "squares", k)
				if err != nil {
					t.Errorf("submit job %d: %v", k, err)
					return
				}
				submitted.Add(1)
				if k%997 == 0 {
					ids.Store(id, k)
				}
			}
		})
	}

	var samples []soakSample
	take := func() {
		s := soakSample{at: time.Since(t0), jobs: submitted.Load(), by: map[string]float64{}}
		for _, p := range procs {
			p.sample(s.by)
		}
		if info, err := js.AccountInfo(ctx); err == nil {
			s.by["jetstream store_bytes"] = float64(info.Store)
		}
		s.by["conductord data_dir_bytes"] = float64(dirBytes(c.data))
		samples = append(samples, s)
		t.Logf("soak %s", s)
	}
	take()
	tick := time.NewTicker(plan.every)
	for end := time.After(plan.duration); ; {
		select {
		case <-tick.C:
			take()
			continue
		case <-end:
		}
		break
	}
	tick.Stop()
	stopLoad()
	submitters.Wait()

	// Nothing lost: every job submitted ended, and the ones kept succeeded
	// with their own result.
	n := int(submitted.Load())
	if !assert.Eventually(t, func() bool { return ev.ended() >= n }, time.Minute, 100*time.Millisecond) {
		t.Errorf("%d jobs submitted, %d ended", n, ev.ended())
	}
	ids.Range(func(id, k any) bool {
		j, err := cl.Job(ctx, id.(string))
		require.NoError(t, err)
		require.Equal(t, client.StatusSucceeded, j.Status, "job %d", k)
		require.Equal(t, strconv.Itoa(k.(int)*k.(int)), strings.TrimSpace(string(j.Result)), "job %d", k)
		return true
	})
	report, pass := slopes(samples, plan.warmup)
	t.Logf("soak summary: %d jobs in %s (%.0f/s), slopes over the %d samples after %d of warm-up:\n%s",
		n, plan.duration, float64(n)/plan.duration.Seconds(), max(len(samples)-plan.warmup, 0), plan.warmup, report)
	if !pass {
		t.Error("a figure grows: see the table above")
	}
}

// soakProc is a process the soak samples.
type soakProc struct {
	name    string
	proc    *proc
	metrics string // a Prometheus endpoint serving go_goroutines, if any
	pprof   string // a pprof goroutine profile (debug=1), if any
}

// sample adds the process's figures to by.
func (p soakProc) sample(by map[string]float64) {
	pid := p.proc.cmd.Process.Pid
	by[p.name+" rss_bytes"] = float64(rssBytes(pid))
	by[p.name+" fds"] = float64(openFDs(pid))
	switch {
	case p.metrics != "":
		by[p.name+" goroutines"] = scrape(p.metrics, "go_goroutines ")
	case p.pprof != "":
		by[p.name+" goroutines"] = scrape(p.pprof, "goroutine profile: total ")
	default:
		by[p.name+" threads"] = float64(threads(pid))
	}
}

// scrape returns the number after prefix on the first line of url's answer
// that starts with it, or -1.
func scrape(url, prefix string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return -1
			}
			return f
		}
	}
	return -1
}

// soakSample is one sample of every figure.
type soakSample struct {
	at   time.Duration
	jobs int64 // jobs submitted by then
	by   map[string]float64
}

func (s soakSample) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "t=%s jobs=%d", s.at.Round(time.Second), s.jobs)
	for _, k := range sortedKeys(s.by) {
		fmt.Fprintf(&b, " %s=%s", strings.ReplaceAll(k, " ", "."), human(k, s.by[k]))
	}
	return b.String()
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// human writes a figure in MiB if it counts bytes.
func human(name string, v float64) string {
	if strings.HasSuffix(name, "bytes") {
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	}
	return fmt.Sprintf("%.0f", v)
}

// flatness is the most a figure may grow per hour and still count as
// flat, measured over window: 5% of its level per hour, or a noise floor
// over the whole window (2 MiB, 3 fds, 10 goroutines or threads),
// whichever is more. The floor keeps a short run from calling one more
// fd a leak; over a long run the 5% rule takes over.
func flatness(name string, level float64, window time.Duration) float64 {
	floor := 10.0 // goroutines, threads
	switch {
	case strings.HasSuffix(name, "bytes"):
		floor = 2 << 20
	case strings.HasSuffix(name, "fds"):
		floor = 3
	}
	return max(0.05*level, floor/max(window.Hours(), 1e-9))
}

// perJob is, for the figures that grow with the jobs kept by design, the
// most they may grow per job submitted: the store (a job's state is kept
// for the retention, 72h) and conductord's memory (JetStream indexes every
// key of the state bucket in memory). 0 for the others, which must be
// flat.
func perJob(name string) float64 {
	switch {
	case strings.HasSuffix(name, "store_bytes"), strings.HasSuffix(name, "data_dir_bytes"):
		return 4096
	case name == "conductord rss_bytes":
		return 2048
	}
	return 0
}

// slopes returns a table of each figure's level and least-squares slope
// per hour over the samples after the first warmup, with its verdict, and
// whether every figure passed: flat (or falling), or, for those that grow
// with the jobs kept, under their bound per job.
func slopes(samples []soakSample, warmup int) (string, bool) {
	if len(samples)-warmup < 2 {
		return "  too few samples after the warm-up for a slope\n", true
	}
	s := samples[warmup:]
	var b strings.Builder
	fmt.Fprintf(&b, "  %-28s %10s %14s %12s  %s\n", "figure", "level", "slope per hour", "flat below", "verdict")
	jobsSlope, _ := fit(s, func(x soakSample) float64 { return float64(x.jobs) })
	pass := true
	for _, k := range sortedKeys(s[0].by) {
		slope, level := fit(s, func(x soakSample) float64 { return x.by[k] })
		limit := flatness(k, level, s[len(s)-1].at-s[0].at)
		verdict := "flat"
		switch {
		case slope > limit:
			verdict = "GROWS"
		case slope < -limit:
			verdict = "falls"
		}
		if bound := perJob(k); bound > 0 {
			per := slope / max(jobsSlope, 1)
			ok := per <= bound
			verdict += fmt.Sprintf("; %.0f bytes per job submitted (bound %.0f: %s)", per, bound, map[bool]string{true: "within", false: "OVER"}[ok])
			pass = pass && ok
		} else if verdict == "GROWS" {
			pass = false
		}
		fmt.Fprintf(&b, "  %-28s %10s %14s %12s  %s\n", k, human(k, level), human(k, slope), human(k, limit), verdict)
	}
	return b.String(), pass
}

// fit returns the least-squares slope of y over the samples' times, per
// hour, and y's mean.
func fit(s []soakSample, y func(soakSample) float64) (slope, mean float64) {
	var sx, sy, sxx, sxy float64
	n := float64(len(s))
	for _, p := range s {
		x := p.at.Hours()
		v := y(p)
		sx, sy, sxx, sxy = sx+x, sy+v, sxx+x*x, sxy+x*v
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0, sy / n
	}
	return (n*sxy - sx*sy) / d, sy / n
}
