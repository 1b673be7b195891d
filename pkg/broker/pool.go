package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// States of a pool, as PoolInfo.State reports them.
const (
	PoolNew      = "new"      // built, not started
	PoolRunning  = "running"  // started
	PoolStopping = "stopping" // Stop or Kill called, processes still running
	PoolStopped  = "stopped"  // every slot goroutine has returned
)

// Errors of the pool lifecycle.
var (
	ErrStarted = errors.New("broker: pool already started")
	ErrStopped = errors.New("broker: pool stopped")
)

// Config configures a Pool.
type Config struct {
	// Spec describes the pool. Required; NewPool validates it and fills in
	// the defaults.
	Spec Spec
	// Source feeds jobs to the workers. Required for ProtocolChannel,
	// unused for ProtocolNone.
	Source Source
	// Host is the host id put in WorkerInfo, in the logs and in the
	// workers' CONDUCTOR_HOST. Empty means the hostname, made a valid token.
	Host string
	// Logger receives the pool's events and every line the workers write
	// to stdout and stderr. Nil means discard.
	Logger *slog.Logger
}

// Pool keeps Spec.Count worker processes running and, for a channel pool,
// feeds them jobs from a Source. Each worker slot is one goroutine that owns
// its process (see slot). A Pool is started once and stopped once.
type Pool struct {
	// Set by NewPool, read-only after.
	spec       Spec // with defaults
	src        Source
	host       string
	log        *slog.Logger // with host and pool
	slots      []*slot
	intake     context.Context         // done once the pool stops: no new jobs, no restarts
	stopIntake context.CancelCauseFunc // ends intake, with cause ErrStopped
	killing    chan struct{}           // closed by Kill: SIGKILL now
	stopped    chan struct{}           // closed once every slot goroutine has returned
	killOnce   sync.Once

	mu         sync.Mutex // guards the fields below
	state      string     // PoolNew, PoolRunning, PoolStopping or PoolStopped
	listenAddr net.Addr   // address of the Listen socket, once started
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
		host = subject.Sanitize(name)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("host", host, "pool", spec.Name)
	intake, stopIntake := context.WithCancelCause(context.Background())
	p := &Pool{
		spec:       spec,
		src:        cfg.Source,
		host:       host,
		log:        log,
		intake:     intake,
		stopIntake: stopIntake,
		killing:    make(chan struct{}),
		stopped:    make(chan struct{}),
		state:      PoolNew,
	}
	for i := range spec.Count {
		p.slots = append(p.slots, newSlot(p, i))
	}
	return p, nil
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.spec.Name }

// Spec returns the pool's spec, with the defaults filled in.
func (p *Pool) Spec() Spec { return p.spec }

// Start checks that the command can be run, opens the Listen socket if any,
// and starts Count worker slots. It returns without waiting for the workers
// to be ready. When ctx ends the pool stops as by Stop. A Start that fails
// leaves the pool new; a second successful Start is an error (ErrStarted),
// as is a Start after Stop (ErrStopped).
func (p *Pool) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.state {
	case PoolRunning, PoolStopping:
		return fmt.Errorf("%w: %q", ErrStarted, p.spec.Name)
	case PoolStopped:
		return fmt.Errorf("%w: %q", ErrStopped, p.spec.Name)
	}
	path, err := resolveCommand(p.spec.Cmd[0], p.spec.Dir)
	if err != nil {
		return fmt.Errorf("broker: start pool %q: command %q: %w", p.spec.Name, p.spec.Cmd[0], err)
	}
	var listener *os.File
	if p.spec.Listen != "" {
		listener, p.listenAddr, err = listen(p.spec.Listen)
		if err != nil {
			return fmt.Errorf("broker: start pool %q: %w", p.spec.Name, err)
		}
	}
	for _, s := range p.slots {
		s.cfg = newProcConfig(p.spec, path, p.host, s.index, listener, s.log)
	}
	p.state = PoolRunning
	sp := acquireSpawner()
	var wg sync.WaitGroup
	for _, s := range p.slots {
		wg.Go(func() { s.run(sp) })
	}
	stopOnCancel := context.AfterFunc(ctx, p.beginStop)
	go func() {
		wg.Wait()
		stopOnCancel()
		if listener != nil {
			listener.Close()
		}
		releaseSpawner()
		p.mu.Lock()
		p.state = PoolStopped
		p.mu.Unlock()
		close(p.stopped)
	}()
	p.log.Info("pool started", "count", p.spec.Count, "protocol", p.spec.Protocol, "cmd", p.spec.Cmd)
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

// Stop stops the pool gracefully and returns once every process is gone.
// In order: no new jobs (the context of every pending Source.Next ends,
// with context.Cause ErrStopped); in-flight jobs get StopTimeout to finish
// and are reported as usual; each worker then gets the shutdown op and EOF
// on fd 3, and KillTimeout to exit; then SIGTERM to its process group,
// KillTimeout more, and SIGKILL. A job still running at the kill is
// reported Crashed ("pool stopped ..."). Stop is idempotent and safe to
// call concurrently with Kill; calling Kill during a Stop hurries it.
func (p *Pool) Stop() {
	p.beginStop()
	<-p.stopped
}

// Kill stops the pool now: SIGKILL to every process group. In-flight jobs
// are reported Crashed ("pool killed"). It returns once every process is
// reaped.
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
		for _, s := range p.slots {
			s.update(func(w *wire.WorkerInfo) { w.State = WorkerExited })
		}
		close(p.stopped)
	case PoolRunning:
		p.state = PoolStopping
		p.stopIntake(ErrStopped)
		p.log.Info("pool stopping")
	}
}

// Stopped returns a channel closed once the pool has stopped: every slot
// goroutine has returned and every process was reaped.
func (p *Pool) Stopped() <-chan struct{} { return p.stopped }

// Workers returns a snapshot of every worker slot, in index order. RSS is
// read from /proc now.
func (p *Pool) Workers() []wire.WorkerInfo {
	out := make([]wire.WorkerInfo, 0, len(p.slots))
	for _, s := range p.slots {
		w := s.snapshot()
		w.RSS = residentBytes(w.PID)
		out = append(out, w)
	}
	return out
}

// Info describes the pool.
func (p *Pool) Info() wire.PoolInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return wire.PoolInfo{
		Name:     p.spec.Name,
		Count:    p.spec.Count,
		Protocol: string(p.spec.Protocol),
		State:    p.state,
	}
}
