package integration

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// chaosPlan is what a chaos run does: how many jobs, how fast, and which
// faults. The short plan runs in make test; CHAOS=long (make chaos) runs
// the long one. Each figure can be set by an environment variable.
type chaosPlan struct {
	jobs    int           // CHAOS_JOBS: squares jobs 0..jobs-1
	spread  time.Duration // CHAOS_SPREAD: the submissions are spread evenly over it
	hosts   int           // workerd hosts
	workers int           // squares workers per host
	// killEvery is the mean time between two faults; each is the next
	// scheduled fault once its share of the jobs is queued, or else the
	// SIGKILL of a random worker process.
	killEvery time.Duration
	// scheduled counts the faults of each kind but kill_worker, placed at
	// random shares of the jobs queued.
	scheduled map[faultKind]int
	stopFor   time.Duration // CHAOS_STOP: how long a SIGSTOP lasts (the lease is 30s)
	seed      uint64        // CHAOS_SEED: the faults' random choices
	timeout   time.Duration // the whole run, checks included
}

func chaosPlanFromEnv(t *testing.T) chaosPlan {
	p := chaosPlan{
		jobs: 3_000, spread: 45 * time.Second, hosts: 3, workers: 2,
		killEvery: 1500 * time.Millisecond,
		scheduled: map[faultKind]int{killConductord: 1, killWorkerd: 1, stopWorkerd: 1, stopWorker: 1},
		stopFor:   36 * time.Second, seed: uint64(time.Now().UnixNano()), timeout: 4 * time.Minute,
	}
	if os.Getenv("CHAOS") == "long" {
		p.jobs, p.spread, p.killEvery, p.timeout = 100_000, 3*time.Minute, 400*time.Millisecond, 20*time.Minute
		p.scheduled = map[faultKind]int{killConductord: 3, killWorkerd: 3, stopWorkerd: 2, stopWorker: 3}
	}
	env := func(name string, parse func(string) error) {
		if v := os.Getenv(name); v != "" {
			require.NoError(t, parse(v), "%s=%q", name, v)
		}
	}
	env("CHAOS_JOBS", func(v string) (err error) { p.jobs, err = strconv.Atoi(v); return })
	env("CHAOS_SPREAD", func(v string) (err error) { p.spread, err = time.ParseDuration(v); return })
	env("CHAOS_STOP", func(v string) (err error) { p.stopFor, err = time.ParseDuration(v); return })
	env("CHAOS_SEED", func(v string) (err error) { p.seed, err = strconv.ParseUint(v, 10, 64); return })
	return p
}

// scheduledFault is a fault due once its share of the jobs is queued.
type scheduledFault struct {
	at   float64
	kind faultKind
}

// schedule places the plan's faults at random shares of the jobs queued:
// the kills between 10% and 85%; the stops early enough that they end
// before the last submission, so that other hosts run the jobs of a
// stopped one while it is stopped.
func (p chaosPlan) schedule(rnd *rand.Rand) []scheduledFault {
	stopsBy := max(0.05, 1-(p.stopFor+5*time.Second).Seconds()/p.spread.Seconds())
	var out []scheduledFault
	for _, k := range []faultKind{killConductord, killWorkerd, stopWorkerd, stopWorker} {
		lo, hi := 0.10, 0.85
		if k == stopWorkerd || k == stopWorker {
			lo, hi = 0.05, stopsBy
		}
		for range p.scheduled[k] {
			out = append(out, scheduledFault{at: lo + rnd.Float64()*max(hi-lo, 0), kind: k})
		}
	}
	slices.SortFunc(out, func(a, b scheduledFault) int { return cmp.Compare(a.at, b.at) })
	return out
}

// TestChaos_NothingLost runs squares jobs on three hosts while faults hit
// every process: SIGKILL of worker processes, of a workerd (started again)
// and of conductord (started again on its data); SIGSTOP of a workerd and
// of a worker process past the job lease, then SIGCONT, so that the
// stopped workerd's jobs are delivered again elsewhere and it comes back
// with late outcomes. Careful clients submit every job with an idempotency
// key until it is queued, and wait for it, through the restarts.
//
// Checked: every job ended once, as its submitter sees it, with its own
// result (i*i); once every stopped process has resumed and the cluster is
// idle, every job's stored state is still what Wait returned (no late
// attempt overwrote it); no worker process outlived its workerd, nor the
// run. The extra attempts that at-least-once delivery allowed are counted
// from the stored histories and reported per 100,000 jobs.
//
// The short plan runs in make test (about a minute); make chaos runs the
// long one (100,000 jobs, docs/reliability.md, "Chaos").
func TestChaos_NothingLost(t *testing.T) {
	plan := chaosPlanFromEnv(t)
	t.Logf("chaos plan: %d jobs over %s, %d hosts x %d workers, a fault every ~%s, scheduled %v, stops of %s, CHAOS_SEED=%d",
		plan.jobs, plan.spread, plan.hosts, plan.workers, plan.killEvery, plan.scheduled, plan.stopFor, plan.seed)
	noOrphansAtEnd(t, filepath.Join(bin, "squares-worker"))
	began := time.Now()

	c := newCluster(t)
	f := newFaults(t, c, squares(plan.workers), plan.hosts, plan.stopFor, plan.seed)
	c.waitWorkers("squares", plan.hosts*plan.workers)
	ev := watchEvents(t, c, "squares", plan.jobs)

	cl, err := client.Connect(c.natsURL(), client.Config{},
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	ctx, cancel := context.WithTimeout(context.Background(), plan.timeout)
	defer cancel()
	l := newLedger(plan.jobs)
	flowEnded := runJobs(ctx, l, cl, plan)

	// The faults, until every job is queued and every scheduled fault was
	// injected.
	rnd := rand.New(rand.NewPCG(plan.seed, 1))
	due := plan.schedule(rnd)
	progress := time.NewTicker(15 * time.Second)
	var logging sync.WaitGroup
	stopLogging := make(chan struct{})
	defer logging.Wait()
	defer close(stopLogging)
	logging.Go(func() {
		defer progress.Stop()
		for {
			select {
			case <-progress.C:
				t.Logf("at %s: %d queued, %d ended; faults %v", time.Since(began).Round(time.Second), l.queued.Load(), l.ended.Load(), f.counts())
			case <-flowEnded:
				return
			case <-stopLogging:
				return
			}
		}
	})
	for len(due) > 0 || l.queued.Load() < int64(plan.jobs) {
		select {
		case <-time.After(time.Duration(float64(plan.killEvery) * (0.5 + rnd.Float64()))):
		case <-ctx.Done():
			t.Fatalf("the run took over %s: %d jobs queued, %d ended; %v", plan.timeout, l.queued.Load(), l.ended.Load(), l.err())
		}
		kind := killWorker
		if len(due) > 0 && float64(l.queued.Load())/float64(plan.jobs) >= due[0].at {
			kind, due = due[0].kind, due[1:]
		}
		require.NoError(t, f.inject(ctx, kind), "fault %s", kind)
	}
	faultsEnded := time.Now()
	f.waitStops()
	select {
	case <-flowEnded:
	case <-ctx.Done():
	}
	require.NoError(t, l.err())
	t.Logf("every job ended as its submitter saw it %s after the start (faults ended at %s)",
		time.Since(began).Round(time.Second), faultsEnded.Sub(began).Round(time.Second))

	// Every job, as its submitter saw it.
	require.NoError(t, l.check())

	// Settled: every stopped process resumed (waitStops), every host back
	// with all its workers idle, nothing queued or running; then every
	// state is read again. Messages that stay queued with every worker
	// idle are read, and reported.
	n := plan.hosts * plan.workers
	if !poll(time.Minute, func() bool {
		p := c.pool("squares")
		return workersIdle(c, n) && p.Queued == 0 && p.Running == 0
	}) {
		if !poll(time.Minute, func() bool { return workersIdle(c, n) && c.pool("squares").Running == 0 }) {
			t.Fatalf("the cluster did not settle: workers %+v, pool %+v", c.workers(), c.pool("squares"))
		}
		left, err := scanLeftovers(ctx, cl)
		require.NoError(t, err)
		t.Errorf("with every worker idle for a minute, %s", left)
		require.Zero(t, left.pending, "jobs queued that nobody takes")
	}
	dups, err := l.reread(ctx, cl)
	require.NoError(t, err, "a job's state changed after its submitter was told it ended")
	require.Zero(t, dups.changed)

	// The workers of every killed workerd died with it.
	if !assert.Eventually(t, func() bool { return len(f.orphans()) == 0 }, 15*time.Second, 50*time.Millisecond) {
		t.Errorf("worker processes outlived their killed workerd: %v", describe(f.orphans()))
	}

	twice := ev.announcedTwice()
	counts := f.counts()
	t.Logf(`chaos summary (CHAOS_SEED=%d):
  jobs:        %d, all succeeded once with their own result as Wait saw them, and still so after the run settled
  wall time:   %s (submissions spread over %s)
  kills:       %d worker processes, %d workerds, %d conductords (SIGKILL)
  stops:       %d workerds, %d worker processes (SIGSTOP for %s, then SIGCONT)
  duplicates:  %s
  late writes: %d superseded attempts caught by the fence (%.0f per 100k jobs)
  end events:  %d jobs announced succeeded more than once (job events; a lower bound: events during a conductord restart are not heard)
  clients:     %d Submit and Wait calls made again after a failure, %d of them Waits cut after %s (each a Wait that hung: none expected)
  orphans:     none (workers of %d killed workerds checked gone; no squares-worker left at cleanup)`,
		plan.seed, plan.jobs, time.Since(began).Round(time.Second), plan.spread,
		counts[killWorker], counts[killWorkerd], counts[killConductord],
		counts[stopWorkerd], counts[stopWorker], plan.stopFor,
		dups, dups.superseded, dups.per100k(dups.superseded), twice, l.retries.Load(), l.cut.Load(), waitCall, counts[killWorkerd])
}

// runJobs submits the plan's jobs, spread evenly over plan.spread by 8
// careful submitters, and waits for each with 64 careful waiters. The
// channel it returns is closed once every job ended or ctx is done.
func runJobs(ctx context.Context, l *ledger, cl *client.Client, plan chaosPlan) <-chan struct{} {
	queued := make(chan int, plan.jobs)
	var submitters, waiters sync.WaitGroup
	t0 := time.Now()
	for w := range 8 {
		submitters.Go(func() {
			for i := w; i < plan.jobs; i += 8 {
				// Pacing the load, not waiting for an event.
				dueAt := t0.Add(time.Duration(int64(plan.spread) * int64(i) / int64(plan.jobs)))
				select {
				case <-time.After(time.Until(dueAt)):
				case <-ctx.Done():
					return
				}
				if l.submit(ctx, cl, i) == "" {
					return
				}
				queued <- i
			}
		})
	}
	for range 64 {
		waiters.Go(func() {
			for i := range queued {
				l.wait(ctx, cl, i)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		submitters.Wait()
		close(queued)
		waiters.Wait()
		close(done)
	}()
	return done
}

// workersIdle reports whether n squares workers are up, none holding a
// job.
func workersIdle(c *cluster, n int) bool {
	up := 0
	for _, w := range c.workers() {
		if w.Pool != "squares" {
			continue
		}
		if w.State != "ready" || w.Job != "" || w.Queued != 0 {
			return false
		}
		up++
	}
	return up == n
}

// poll reports whether cond became true within limit, asking it every
// 100ms: for conditions on the processes of the run, which send no signal.
func poll(limit time.Duration, cond func() bool) bool {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return false
		}
	}
	return true
}

// announcedTwice counts the jobs whose success was announced more than
// once.
func (ev *events) announcedTwice() int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	n := 0
	for _, by := range ev.byID {
		if by[wire.StatusSucceeded] > 1 {
			n++
		}
	}
	return n
}

// noOrphansAtEnd checks, once every process the test started has been
// stopped (this cleanup is registered first, so it runs last), that no
// process of the binary at path is left, and no child of the test.
func noOrphansAtEnd(t *testing.T, path string) {
	t.Cleanup(func() {
		var left, kids []int
		if !assert.Eventually(t, func() bool {
			left = processesOf(path)
			kids = slices.DeleteFunc(children(os.Getpid()), dead)
			return len(left) == 0 && len(kids) == 0
		}, 15*time.Second, 50*time.Millisecond) {
			t.Errorf("processes left after the run: %s %v, children of the test %v", filepath.Base(path), left, describe(kids))
		}
	})
}

// describe names each process by its command line.
func describe(pids []int) []string {
	var out []string
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(b), "\x00", " ")))
	}
	return out
}

// children lists the child processes of pid, from every thread's
// /proc/<pid>/task/<tid>/children.
func children(pid int) []int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}
