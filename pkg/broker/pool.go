package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conductor-run/conductor/internal/cgroup"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/token"
)

// Errors of the pool lifecycle.
var (
	ErrStopped    = errors.New("broker: pool stopped")
	ErrNotStarted = errors.New("broker: pool not started")
)

// Config configures a Pool.
type Config struct {
	// Spec describes the pool. Required; NewPool validates it and fills in
	// the defaults.
	Spec Spec
	// Source feeds jobs to the workers. Required for ProtocolChannel,
	// unused for ProtocolNone.
	Source Source
	// Host is the host id put in every Worker, Event and LogLine, in the
	// logs and in the workers' CONDUCTOR_HOST. Empty means the hostname,
	// made a valid token (letters, digits, '-' and '_').
	Host string
	// Logger receives the pool's events and, unless OnOutput is set, every
	// line the workers write to stdout and stderr. Nil means discard.
	Logger *slog.Logger
	// OnEvent, if set, receives every worker and pool event (see Event) as
	// it happens. It is called from the pool's goroutines and must not
	// block.
	OnEvent func(Event)
	// OnOutput, if set, receives every line the workers write to stdout and
	// stderr, tagged. It is called from the goroutine reading the stream:
	// while it blocks, the worker's writes block too.
	OnOutput func(LogLine)
	// OnRequest, if set, answers the requests of the pool's channel
	// workers (Request: a lookup). It is called on the worker's session
	// goroutine and must not block: it calls answer once, at once or
	// later from any goroutine. A worker has at most 64 requests in
	// flight; without OnRequest, each is answered with an error.
	OnRequest func(r Request, answer func(Reply))

	// test is what only tests set, through export_test.go; its zero value
	// is production's.
	test testConfig
}

// testConfig holds the settings of a Pool that tests change, per pool, so
// that no test changes package state, and the test signals: hooks the pool
// calls at points a test waits for, so that it need not poll. Each signal
// is nil, a no-op, in production.
type testConfig struct {
	// checkInterval is how often the supervisor looks for workers to
	// recycle by age or memory. Zero means defaultCheckInterval.
	checkInterval time.Duration
	// workersChanged is called after every change of what Workers
	// returns: a slot added or removed; a worker's pid, state, job, queue,
	// counts or last exit. It is called on the goroutine that made the
	// change, maybe with Pool.mu held, so it must not block or call the
	// pool.
	workersChanged func()
	// noCgroups keeps the pool's processes out of cgroups, as on a host
	// that has none.
	noCgroups bool
	// noCloneInto starts the pool's processes outside their cgroup2 leaf
	// and moves them there right after, as where clone3 is refused.
	noCloneInto bool
	// procEnded is called on the slot goroutine when a process has ended,
	// with the most memory its cgroup used (-1: unknown).
	procEnded func(pid int, memPeak int64)
}

// defaultCheckInterval is how often the supervisor looks for workers to
// recycle by age or memory.
const defaultCheckInterval = time.Second

// Pool keeps Spec.Count worker processes running and, for a channel pool,
// feeds them jobs from a Source. It is a startstop.Service, started once
// and stopped once: a Pool is not restarted (see Start).
//
// Goroutines, and the state each owns (STYLE rule 6):
//
//   - the caller's: NewPool sets the fields above mu, read-only after.
//     Every exported method may run on any goroutine; what they share is
//     behind mu.
//   - one supervisor (supervise), started by Start, ended by intake: it
//     owns the set of slots (adding and retiring them; p.slots itself is
//     under mu, as Workers and Cancel read it) and runs the commands
//     (Drain, Resume, Recycle, Restart, Resize, Upgrade) one at a time,
//     received over ops, and recycles workers by age, jobs done and memory.
//   - one per slot (slot.run): it owns its process and restarts it; see
//     slot. A slot's context is a child of intake.
//   - per process, its Wait goroutine and output readers (see proc), and
//     per session its Source.Next and job-write helpers (see session):
//     each is owned by its slot goroutine, which waits for it to end.
//   - one reaper, started by Start: it waits for slotWG (the supervisor
//     and every slot) and then closes the listener, releases the spawner,
//     and closes stopped.
//
// None of these is a startstop.Service of its own: each is owned by the
// pool or by its slot, is started once, and ends when its owner's context
// is cancelled or its input closes; its owner waits for it (slotWG,
// slot.ended, proc.exited, readerDone) before it reports itself stopped.
type Pool struct {
	// Set by NewPool, read-only after.
	spec       Spec // with defaults, as given at NewPool; the current one is gen.spec (see Spec)
	src        Source
	host       string
	log        *slog.Logger // with host and pool
	onEvent    func(Event)
	onOutput   func(LogLine)
	onRequest  func(Request, func(Reply))
	test       testConfig              // with defaults
	intake     context.Context         // done once the pool stops: no new jobs, no restarts
	stopIntake context.CancelCauseFunc // ends intake, with cause ErrStopped
	killing    chan struct{}           // closed by Kill: SIGKILL now
	stopped    chan struct{}           // closed once every slot goroutine has returned
	killOnce   sync.Once
	ops        chan *op       // Pool methods -> supervisor
	poke       chan struct{}  // slots -> supervisor: a worker asks to be recycled
	slotWG     sync.WaitGroup // the supervisor and every slot goroutine

	mu          sync.Mutex // guards the fields below
	state       PoolState
	operation   Operation
	count       int           // workers wanted
	gen         *generation   // what new workers run
	slots       []*slot       // every slot whose goroutine runs, in start order
	breaker     breaker       // max_restarts_per_minute: every restart
	crashLoop   breaker       // max_failed_starts: restarts after a failed start
	retryAt     time.Time     // while failed: when restarts are allowed again
	lastErr     string        // why the pool failed, or the last upgrade rolled back
	failReason  string        // while failed: the reason Info reports
	stopTimeout time.Duration // overrides StopTimeout for the final stop (Shutdown)
	listener    *os.File      // the Listen socket, once started
	listenAddr  net.Addr

	// Set by Start before any slot runs, read-only after (containment.go).
	cg      *cgroup.Group // the pool's cgroup; nil: process groups only
	cgHost  *cgroup.Host  // cg's host
	leafSeq atomic.Int64  // names the leaves of cg
}

// generation is one version of what the pool's workers run: the spec it
// started with, then one per Update or Upgrade.
type generation struct {
	spec    Spec   // with defaults
	path    string // the program, resolved
	version int
}

// NewPool validates cfg and returns a pool ready to Start.
func NewPool(cfg Config) (*Pool, error) {
	if err := cfg.Spec.Validate(); err != nil {
		return nil, err
	}
	spec := cfg.Spec.withDefaults()
	if spec.Protocol == ProtocolChannel && cfg.Source == nil {
		return nil, fmt.Errorf("broker: pool %q: a %s pool needs a Source", spec.Name, spec.Protocol)
	}
	host := cfg.Host
	if host == "" {
		name, _ := os.Hostname()
		host = token.Sanitize(name)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("host", host, "pool", spec.Name)
	intake, stopIntake := context.WithCancelCause(context.Background())
	return &Pool{
		spec:      spec,
		src:       cfg.Source,
		host:      host,
		log:       log,
		onEvent:   cfg.OnEvent,
		onOutput:  cfg.OnOutput,
		onRequest: cfg.OnRequest,
		test: testConfig{
			checkInterval:  cmp.Or(cfg.test.checkInterval, defaultCheckInterval),
			workersChanged: cfg.test.workersChanged,
			noCgroups:      cfg.test.noCgroups,
			procEnded:      cfg.test.procEnded,
			noCloneInto:    cfg.test.noCloneInto,
		},
		intake:     intake,
		stopIntake: stopIntake,
		killing:    make(chan struct{}),
		stopped:    make(chan struct{}),
		ops:        make(chan *op),
		poke:       make(chan struct{}, 1),
		state:      PoolNew,
		count:      spec.Count,
		breaker:    breaker{Budget: spec.MaxRestartsPerMinute, Window: restartWindow},
		crashLoop:  breaker{Budget: spec.MaxFailedStarts, Window: spec.FailedStartWindow},
	}, nil
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.spec.Name }

// Spec returns the pool's spec, with the defaults filled in and the current
// Count and Cmd.
func (p *Pool) Spec() Spec {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.spec
	if p.gen != nil {
		s = p.gen.spec
		s.Cmd = slices.Clone(s.Cmd)
		s.Env = slices.Clone(s.Env)
	}
	s.Count = p.count
	s.MaxRestartsPerMinute = p.breaker.Budget
	s.MaxFailedStarts, s.FailedStartWindow = p.crashLoop.Budget, p.crashLoop.Window
	return s
}

var _ startstop.Service = (*Pool)(nil)

// Start starts the pool and returns once it has started: it checks that the
// command can be run, opens the Listen socket if any, and starts Count
// worker slots and the supervisor, without waiting for the workers to be
// ready. The pool stops when ctx is cancelled or Stop is called, whichever
// is first; cancelling ctx stops it as Stop would, gracefully.
//
// A Pool has one life. A Start that fails leaves the pool new, to be
// started again. A second Start while it runs does nothing (as the
// startstop contract says); a Start after Stop (or Kill) does nothing but
// return ErrStopped: a pool runs once.
func (p *Pool) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.state {
	case PoolNew:
	case PoolStopping, PoolStopped:
		return fmt.Errorf("%w: %q", ErrStopped, p.spec.Name)
	default:
		return nil // running already
	}
	path, err := resolveCommand(p.spec.Cmd[0], p.spec.Dir)
	if err != nil {
		return fmt.Errorf("broker: start pool %q: command %q: %w", p.spec.Name, p.spec.Cmd[0], err)
	}
	if p.spec.Listen != "" {
		p.listener, p.listenAddr, err = listen(p.spec.Listen)
		if err != nil {
			return fmt.Errorf("broker: start pool %q: %w", p.spec.Name, err)
		}
	}
	p.gen = &generation{spec: p.spec, path: path, version: 1}
	p.startCgroup()
	p.state = PoolRunning
	sp := acquireSpawner()
	for i := range p.count {
		p.addSlotLocked(sp, i, ReasonStart, p.gen)
	}
	p.slotWG.Go(func() { p.supervise(sp) })
	stopOnCancel := context.AfterFunc(ctx, p.beginStop)
	go func() {
		p.slotWG.Wait()
		stopOnCancel()
		if p.listener != nil {
			p.listener.Close()
		}
		p.stopCgroup()
		releaseSpawner()
		p.mu.Lock()
		p.state = PoolStopped
		p.mu.Unlock()
		p.emit(Event{Kind: EventPoolStopped})
		close(p.stopped)
	}()
	p.log.Info("pool started", "count", p.count, "protocol", p.spec.Protocol, "cmd", p.spec.Cmd)
	return nil
}

// listen opens the TCP socket of Spec.Listen and returns it as a file to
// pass to the workers, and its address.
func listen(addr string) (*os.File, net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	defer l.Close() // the file is a duplicate that stays open
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return f, l.Addr(), nil
}

// ListenAddr returns the address of the pool's Listen socket (useful with
// port 0), or nil if the pool has none or has not started.
func (p *Pool) ListenAddr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.listenAddr
}

// Stop stops the pool and waits until it has: it returns once every
// process is gone. It is idempotent, safe to call from any goroutine, and
// returns at once if the pool never started (which it then never will: a
// later Start returns ErrStopped). The stop is graceful, in order: no new
// jobs (the context of every pending Source.Next ends, with context.Cause
// ErrStopped); in-flight jobs get StopTimeout to finish
// and are reported as usual; each worker then gets the shutdown op and EOF
// on fd 3, and KillTimeout to exit; then SIGTERM to its process group,
// KillTimeout more, and SIGKILL. A job still running at the kill is
// reported Crashed ("pool stopped ..."). Stop is safe to call
// concurrently with Kill; calling Kill during a Stop hurries it.
func (p *Pool) Stop() {
	p.beginStop()
	<-p.stopped
}

// Shutdown is Stop with timeout, instead of StopTimeout, for the jobs in
// flight (zero means StopTimeout).
func (p *Pool) Shutdown(timeout time.Duration) {
	p.mu.Lock()
	if p.stopTimeout == 0 {
		p.stopTimeout = timeout
	}
	p.mu.Unlock()
	p.Stop()
}

// Kill stops the pool now: SIGKILL to every process group. In-flight jobs
// are reported Crashed ("pool killed"). It returns once every process is
// reaped. Like Stop it is idempotent and returns at once for a pool never
// started.
func (p *Pool) Kill() {
	p.beginStop()
	p.killOnce.Do(func() { close(p.killing) })
	<-p.stopped
}

// beginStop ends intake; the slots take it from there.
func (p *Pool) beginStop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.state {
	case PoolNew:
		p.state = PoolStopped
		p.stopIntake(ErrStopped)
		close(p.stopped)
	case PoolStopping, PoolStopped:
	default:
		p.state = PoolStopping
		p.stopIntake(ErrStopped)
		p.log.Info("pool stopping")
	}
}

// Stopped is closed when the pool has stopped after a Start: every slot
// goroutine has returned and every process was reaped. As a Pool has one
// life it has one such channel: before Start it is open, and it is closed
// by the first Stop or Kill of a pool never started.
func (p *Pool) Stopped() <-chan struct{} { return p.stopped }

// addSlotLocked starts a slot at index running gen; its first process
// starts for reason. p.mu is held.
func (p *Pool) addSlotLocked(sp *spawner, index int, reason Reason, gen *generation) *slot {
	s := newSlot(p, index, reason, gen)
	p.slots = append(p.slots, s)
	p.slotWG.Go(func() { s.run(sp) })
	p.workersChanged()
	return s
}

func (p *Pool) addSlot(sp *spawner, index int, reason Reason, gen *generation) *slot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addSlotLocked(sp, index, reason, gen)
}

// removeSlot drops s from the pool's slots; its goroutine is returning.
func (p *Pool) removeSlot(s *slot) {
	p.mu.Lock()
	p.slots = slices.DeleteFunc(p.slots, func(x *slot) bool { return x == s })
	p.mu.Unlock()
	p.workersChanged()
}

// admitRestart asks the breakers for one restart of a slot whose process
// ended as exit says; failedStart says whether that process failed its
// start (see Spec.MaxFailedStarts), which the crash-loop breaker counts.
// Refused, the pool is marked failed until the breakers allow another
// restart; the first restart allowed after that marks it running again.
func (p *Pool) admitRestart(now time.Time, failedStart bool, exit string) (bool, time.Duration) {
	p.mu.Lock()
	ok, wait := p.breaker.admit(now)
	why := ""
	if !ok {
		why = fmt.Sprintf("workers restarted %d times within %s", p.breaker.Budget, restartWindow)
	} else if failedStart {
		if ok, wait = p.crashLoop.admit(now); !ok {
			why = fmt.Sprintf("%d failed starts within %s", p.crashLoop.Budget, p.crashLoop.Window)
		}
	}
	var e *Event
	switch {
	case !ok && p.state != PoolFailed && p.state != PoolStopping && p.state != PoolStopped:
		p.state, p.retryAt = PoolFailed, now.Add(wait)
		p.lastErr = why
		p.failReason = failReason(why, exit, p.retryAt)
		e = &Event{Kind: EventPoolFailed, RetryAt: p.retryAt.UTC(), Error: p.failReason, Count: p.count}
	case !ok && p.state == PoolFailed && now.Add(wait).After(p.retryAt):
		p.retryAt = now.Add(wait)
		p.failReason = failReason(why, exit, p.retryAt)
	case ok && p.state == PoolFailed:
		p.state, p.retryAt, p.failReason = PoolRunning, time.Time{}, ""
		e = &Event{Kind: EventPoolRecovered, Count: p.count}
	}
	p.mu.Unlock()
	if e != nil {
		if e.Kind == EventPoolFailed {
			p.log.Error("workers keep failing; restarts paused", "why", why, "exit", exit, "retry_in", wait.Round(time.Millisecond))
		} else {
			p.log.Info("restarts allowed again")
		}
		p.emit(*e)
	}
	return ok, wait
}

// failReason is the reason of a failed pool: why the breaker tripped, the
// last exit, and when restarts are tried again.
func failReason(why, exit string, retryAt time.Time) string {
	s := "crash loop: " + why
	if exit != "" {
		s += "; last " + exit
	}
	return s + "; retry at " + formatTime(retryAt)
}

// formatTime formats t for a reason: UTC, to the millisecond.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// stopTimeoutOverride is the StopTimeout of Shutdown, or zero.
func (p *Pool) stopTimeoutOverride() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopTimeout
}
