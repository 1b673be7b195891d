package integration

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultKind names one kind of fault the chaos run injects.
type faultKind string

const (
	killWorker     faultKind = "kill_worker"     // SIGKILL of a worker process
	killWorkerd    faultKind = "kill_workerd"    // SIGKILL of a workerd, started again
	killConductord faultKind = "kill_conductord" // SIGKILL of conductord, started again on its data
	stopWorkerd    faultKind = "stop_workerd"    // SIGSTOP of a workerd past the lease, then SIGCONT
	stopWorker     faultKind = "stop_worker"     // SIGSTOP of a worker process past the lease, then SIGCONT
)

// chaosHost is one workerd host of the chaos cluster.
type chaosHost struct {
	name    string
	proc    *proc
	stopped bool // between its SIGSTOP and its SIGCONT
}

// faults injects faults into a cluster of hosts. Its methods may be called
// from several goroutines: the kills come from one, and each stop runs in
// its own for the length of the stop.
type faults struct {
	t       testing.TB
	c       *cluster
	pool    string // the pool spec every host runs
	stopFor time.Duration

	// mu guards every field below.
	mu    sync.Mutex
	rnd   *rand.Rand
	hosts []*chaosHost
	count map[faultKind]int
	// stoppedPIDs are the worker processes under SIGSTOP.
	stoppedPIDs map[int]bool
	// orphanWatch are the worker processes of the workerds killed: each
	// must be gone soon after its workerd (checked at the end).
	orphanWatch []int
	stops       sync.WaitGroup // the stops in progress
}

func newFaults(t testing.TB, c *cluster, pool string, hosts int, stopFor time.Duration, seed uint64) *faults {
	f := &faults{
		t: t, c: c, pool: pool, stopFor: stopFor,
		rnd:         rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		count:       map[faultKind]int{},
		stoppedPIDs: map[int]bool{},
	}
	for i := range hosts {
		name := fmt.Sprintf("host-%c", 'a'+i)
		f.hosts = append(f.hosts, &chaosHost{name: name, proc: c.workerd(name, pool)})
	}
	// Whatever happens to the test, no process is left stopped.
	t.Cleanup(f.resumeAll)
	return f
}

// inject runs one fault of kind k. A stop returns at once; it ends on its
// own after stopFor, or when ctx is done.
func (f *faults) inject(ctx context.Context, k faultKind) error {
	switch k {
	case killWorker:
		return f.killWorker()
	case killWorkerd:
		return f.killWorkerd()
	case killConductord:
		return f.killConductord(ctx)
	case stopWorkerd:
		return f.stopWorkerd(ctx)
	case stopWorker:
		return f.stopWorker(ctx)
	}
	return fmt.Errorf("unknown fault %q", k)
}

// counts returns how many faults of each kind were injected.
func (f *faults) counts() map[faultKind]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.count)
}

// workerPIDs lists the worker processes of every host, as children of its
// workerd.
func (f *faults) workerPIDs() []int {
	var pids []int
	for _, h := range f.hosts {
		pids = append(pids, children(h.proc.cmd.Process.Pid)...)
	}
	return pids
}

func (f *faults) killWorker() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	pids := f.workerPIDs()
	if len(pids) == 0 {
		return nil // every worker is being replaced: try next time
	}
	if err := syscall.Kill(pids[f.rnd.IntN(len(pids))], syscall.SIGKILL); err != nil {
		return nil // it exited in between
	}
	f.count[killWorker]++
	return nil
}

// runningHost returns a random host that is not stopped, or nil.
func (f *faults) runningHost() *chaosHost {
	var hs []*chaosHost
	for _, h := range f.hosts {
		if !h.stopped {
			hs = append(hs, h)
		}
	}
	if len(hs) == 0 {
		return nil
	}
	return hs[f.rnd.IntN(len(hs))]
}

// killWorkerd SIGKILLs a running workerd and starts it again under the
// same host id. Its workers must die with it (their parent-death signal):
// they are watched for the end of the run.
func (f *faults) killWorkerd() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.runningHost()
	if h == nil {
		return nil
	}
	f.orphanWatch = append(f.orphanWatch, children(h.proc.cmd.Process.Pid)...)
	_ = h.proc.cmd.Process.Kill()
	<-h.proc.exited
	h.proc = f.c.workerd(h.name, f.pool)
	f.count[killWorkerd]++
	return nil
}

// killConductord SIGKILLs conductord and starts it again on the same data,
// waiting until it answers.
func (f *faults) killConductord(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.c
	_ = c.conductor.cmd.Process.Kill()
	<-c.conductor.exited
	f.count[killConductord]++
	c.conductor = start(f.t, "conductord", "--data", c.data, "--nats", c.natsAddr, "--http", c.httpAddr)
	return waitHealthy(ctx, c, 60*time.Second)
}

// waitHealthy waits until conductord answers /healthz with 200, or returns
// an error after limit: unlike cluster.waitHealthy it may run outside the
// test's goroutine.
func waitHealthy(ctx context.Context, c *cluster, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(c.url("/healthz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-c.conductor.exited:
			return fmt.Errorf("conductord exited on restart: %v\n%s", c.conductor.err, tail([]byte(c.conductor.output()), 4000))
		case <-ctx.Done():
			return fmt.Errorf("conductord not healthy within %s of its restart: %w", limit, ctx.Err())
		}
	}
}

// stopWorkerd SIGSTOPs a running workerd (not its workers: each leads its
// own process group) for stopFor, past the lease of the jobs it holds, so
// that they are delivered again elsewhere, and then SIGCONTs it.
func (f *faults) stopWorkerd(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.hosts) < 2 {
		return errors.New("stop_workerd needs a second host to take the jobs")
	}
	h := f.runningHost()
	if h == nil {
		return nil
	}
	p := h.proc
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP %s: %w", h.name, err)
	}
	h.stopped = true
	f.count[stopWorkerd]++
	f.stops.Go(func() {
		f.hold(ctx)
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT)
		f.mu.Lock()
		h.stopped = false
		f.mu.Unlock()
	})
	return nil
}

// stopWorker SIGSTOPs a random worker process for stopFor, then SIGCONTs
// it. Its workerd keeps the lease of its job: the job waits for it.
func (f *faults) stopWorker(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	pids := slices.DeleteFunc(f.workerPIDs(), func(pid int) bool { return f.stoppedPIDs[pid] })
	if len(pids) == 0 {
		return nil
	}
	pid := pids[f.rnd.IntN(len(pids))]
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return nil // it exited in between
	}
	f.stoppedPIDs[pid] = true
	f.count[stopWorker]++
	f.stops.Go(func() {
		f.hold(ctx)
		_ = syscall.Kill(pid, syscall.SIGCONT)
		f.mu.Lock()
		delete(f.stoppedPIDs, pid)
		f.mu.Unlock()
	})
	return nil
}

// hold lasts as long as a stop: this is the fault's length, not a wait
// for something to happen.
func (f *faults) hold(ctx context.Context) {
	select {
	case <-time.After(f.stopFor):
	case <-ctx.Done():
	}
}

// waitStops waits until every stop has ended.
func (f *faults) waitStops() { f.stops.Wait() }

// resumeAll SIGCONTs every process a stop may have left stopped.
func (f *faults) resumeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.hosts {
		_ = syscall.Kill(h.proc.cmd.Process.Pid, syscall.SIGCONT)
	}
	for pid := range f.stoppedPIDs {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
}

// orphans returns the worker processes of killed workerds that are still
// alive.
func (f *faults) orphans() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(f.orphanWatch), dead)
}
