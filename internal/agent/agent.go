// Package agent is the part of workerd that talks to the conductor: it runs
// the host's broker pools, feeds each channel pool from the job stream of
// its type, writes job states, and announces the host's workers in a
// heartbeat. It is a library so that workerd and the in-process batch runner
// of pkg/conductor share it.
package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// Config configures an Agent.
type Config struct {
	// Conn is the connection to the conductor's NATS. Required; the caller
	// owns it and closes it after Stop.
	Conn *nats.Conn
	// Namespace isolates conductors sharing one NATS. Default "default".
	Namespace string
	// Host is this host's id, a subject token. Required.
	Host string
	// Pools are the pools to run. Each channel pool serves the job type of
	// its name.
	Pools []broker.Spec
	// Logger receives the agent's and the workers' logs. Default: discard.
	Logger *slog.Logger
	// HeartbeatInterval is how often the host's workers are announced.
	// Default 1s.
	HeartbeatInterval time.Duration
	// AckWait is the lease of a job: a job whose host stops extending it for
	// this long is redelivered. Default 30s.
	AckWait time.Duration
	// PullExpires is how long one pull request for a job waits at the
	// server before it is renewed. Default 5s.
	PullExpires time.Duration
	// MaxResult bounds a job's result, in bytes. Default 1 MiB.
	MaxResult int
	// Prefetch bounds the jobs per worker a pool holds ahead while its jobs
	// are short (under 20ms on average), to save a round trip per job and
	// to carry many jobs in each message to the server. Within it, a pool
	// holds what its workers run in 100ms, and 8 MiB of payloads at most.
	// Default 512: two workers then hold about what the two consumers of
	// the benchmark's raw baseline pull at once (500 each). Negative: never
	// hold more jobs than idle workers.
	Prefetch int
	// LogRate bounds the output lines forwarded over NATS per pool per
	// second (with a burst of as many); lines over it are dropped and
	// counted. The same lines, and only those, go to Logger, and every 10
	// seconds Logger gets, per worker that lost lines, how many ("dropped
	// N lines of pool P worker I in the last 10s"). Past 20 times the rate
	// (long lines counting more), workerd stops reading the pool's output
	// for a moment, and the workers' writes block. Default DefaultLogRate.
	LogRate int
	// MaxPoolSize bounds the count of every pool: a pool of Pools, of a
	// Reload or a resize command asking for more is refused. Default
	// (zero or negative) DefaultMaxPoolSize.
	MaxPoolSize int

	// logReport is how often the dropped lines are reported; tests only.
	// Zero means dropReportInterval.
	logReport time.Duration
}

// Agent runs a host's pools against the conductor. Build it with New.
type Agent struct {
	cfg   Config
	space subject.Space
	js    jetstream.JetStream
	api   string // js's API prefix: "$JS.API", or a host account's
	// payloads is where the payloads passed by reference are read, for
	// every pool of a host that reads the bucket itself.
	payloads payloads.Source
	log      *slog.Logger
	start    time.Time
	logs     *logForwarder
	// svc asks conductord for the pools' consumers and the cancels.
	svc *hostsvc.Caller
	// cancels holds the ids of cancelled jobs (see watchCancels).
	cancels *cancels
	// cancelCheck is how often the cancels are checked for ids missed
	// (hostsvc.FollowCheck; tests shorten it).
	cancelCheck time.Duration
	// consent is what the host's config lets an upgrade command run.
	consent *consent
	// replays marks the messages a restarted server may deliver again as
	// first deliveries (see watchReconnects).
	replays replays
	// lookups answers the workers' lookups; set by Start.
	lookups *lookups

	life   startstop.Base  // the lifecycle: Start, Stop, Stopped
	ctx    context.Context // the agent's life; set by Start
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the agent but the one that stops it

	mu      sync.Mutex // guards pools and closing
	pools   []*pool    // in start order
	closing bool       // Stop began: no new pool, no new command
}

// New checks cfg and returns an Agent ready to Start.
func New(cfg Config) (*Agent, error) {
	if cfg.Conn == nil {
		return nil, errors.New("agent: no NATS connection")
	}
	cfg.Namespace = cmp.Or(cfg.Namespace, "default")
	space, err := subject.New(cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := subject.Token("host id", cfg.Host); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	cfg.HeartbeatInterval = cmp.Or(cfg.HeartbeatInterval, time.Second)
	cfg.AckWait = cmp.Or(cfg.AckWait, 30*time.Second)
	cfg.PullExpires = cmp.Or(cfg.PullExpires, 5*time.Second)
	cfg.MaxResult = cmp.Or(cfg.MaxResult, 1<<20)
	if mp := int(cfg.Conn.MaxPayload()); mp > 0 {
		// A job's state holds its result and up to stateRoom of errors
		// and history: it must fit the server's largest message.
		cfg.MaxResult = min(cfg.MaxResult, max(mp-stateRoom, 1))
	}
	cfg.Prefetch = max(cmp.Or(cfg.Prefetch, 512), 0)
	cfg.LogRate = cmp.Or(cfg.LogRate, DefaultLogRate)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxPoolSize <= 0 {
		cfg.MaxPoolSize = DefaultMaxPoolSize
	}
	if err := checkSpecs(cfg.Pools); err != nil {
		return nil, err
	}
	if err := CheckPoolSizes(cfg.Pools, cfg.MaxPoolSize); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, space: space, log: cfg.Logger.With("host", cfg.Host), consent: newConsent(cfg.Pools)}
	a.logs = newLogForwarder(cfg.Conn, space, a.log, cfg.LogRate, cmp.Or(cfg.logReport, dropReportInterval))
	a.cancels = newCancels()
	a.svc, a.cancelCheck = hostsvc.NewCaller(cfg.Conn, space), hostsvc.FollowCheck
	// A host's credential connects in an account of its own, which
	// reaches the namespace's JetStream under a prefix (docs/security.md).
	a.api = "$JS.API"
	if auth.IsHostToken(cfg.Conn.Opts.Token) {
		a.api = auth.HostAPIPrefix
		a.js, err = jetstream.NewWithAPIPrefix(cfg.Conn, a.api)
	} else {
		a.js, err = jetstream.New(cfg.Conn)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.payloads = payloads.StreamSource(payloads.NewBucket(a.js, space.PayloadBucket()))
	return a, nil
}

// checkSpecs validates specs and their names being distinct.
func checkSpecs(specs []broker.Spec) error {
	seen := map[string]bool{}
	for _, spec := range specs {
		if err := spec.Validate(); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		if seen[spec.Name] {
			return fmt.Errorf("agent: two pools named %q", spec.Name)
		}
		seen[spec.Name] = true
	}
	return nil
}

// Start starts every pool, the heartbeat, and the handling of the
// conductor's commands, and returns once they have started. A channel pool
// starts once the conductor's job stream exists; until then the agent
// retries, logging why. The agent runs until ctx is cancelled or Stop is
// called, and stops then as Stop says. A second Start while it runs does
// nothing; an agent runs once, and Start after it stopped is an error.
func (a *Agent) Start(ctx context.Context) error {
	ctx, ok, done, err := a.life.StartInitOnce(ctx)
	if err != nil {
		return errors.New("agent: stopped; an Agent runs once")
	}
	if !ok {
		return nil
	}
	a.start = time.Now().UTC()
	a.ctx, a.cancel = context.WithCancel(ctx)
	a.lookups = newLookups(a.ctx, &a.wg, a.cfg.Conn, a.space, a.log, a.runningPools)
	a.replays.connected(a.cfg.Conn.ConnectedServerId())
	sub, err := a.cfg.Conn.Subscribe(a.space.Control(a.cfg.Host), a.command)
	if err != nil {
		a.cancel()
		done()
		return fmt.Errorf("agent: subscribe to commands: %w", err)
	}
	tails, err := a.cfg.Conn.Subscribe(a.space.LogTail(a.cfg.Host), a.answerTail)
	if err != nil {
		_ = sub.Unsubscribe()
		a.cancel()
		done()
		return fmt.Errorf("agent: subscribe to tail requests: %w", err)
	}
	a.mu.Lock()
	for _, spec := range a.cfg.Pools {
		a.startPoolLocked(spec)
	}
	a.mu.Unlock()
	a.wg.Go(func() { a.heartbeat(a.ctx) })
	a.wg.Go(func() { a.watchReconnects(a.ctx) })
	a.wg.Go(func() { a.watchCancels(a.ctx) })
	a.wg.Go(func() { a.logs.run(a.ctx) })
	go func() {
		defer done()
		<-a.ctx.Done()
		_ = sub.Unsubscribe()
		_ = tails.Unsubscribe()
		a.shutdown()
	}()
	return nil
}

// Stop stops the pools gracefully (see broker.Pool.Stop), finishes every job
// outcome, and announces that the host is leaving. It blocks until done, is
// safe to call more than once, and returns at once if Start was not called.
func (a *Agent) Stop() { a.life.Stop() }

// shutdown is the stop, on the goroutine that Start left waiting for it:
// no new pool or command, the pools stopped (their context is done), then
// the last heartbeat.
func (a *Agent) shutdown() {
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	a.wg.Wait()
	a.lookups.stop()
	a.publishHeartbeat(true)
	if a.cfg.Conn.IsConnected() {
		_ = a.cfg.Conn.FlushTimeout(2 * time.Second)
	}
}

// Kill stops every pool now: SIGKILL to every worker process group. Jobs
// in flight are redelivered. Use it when a graceful Stop takes too long; it
// may run while Stop does.
func (a *Agent) Kill() {
	for _, p := range a.poolList() {
		if bp, _ := p.running(); bp != nil {
			bp.Kill()
		}
	}
	if a.cancel != nil {
		a.cancel()
	}
}

// Stopped is closed when the agent has stopped after a Start (at once
// before any).
func (a *Agent) Stopped() <-chan struct{} { return a.life.Stopped() }

var _ startstop.Service = (*Agent)(nil)

// watchReconnects tells every job source when the connection is re-made,
// so that jobs flow again at once after a conductord restart.
func (a *Agent) watchReconnects(ctx context.Context) {
	ch := a.cfg.Conn.StatusChanged(nats.CONNECTED)
	defer a.cfg.Conn.RemoveStatusListener(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		// Before the fetchers pull again: what they get from a new
		// server is suspect (replays.suspect also tells by the server
		// id until this is done).
		restarted := a.replays.connected(a.cfg.Conn.ConnectedServerId())
		for _, p := range a.poolList() {
			if _, src := p.running(); src != nil {
				src.reconnected()
			}
		}
		a.publishHeartbeat(false)
		if restarted {
			a.log.Info("connected to a new server (a restart?): the jobs queued before claim their state before they run, as redeliveries do")
			a.replays.learn(ctx, a.js, a.space.JobStream())
		}
	}
}

// heartbeat announces the host's workers every interval until ctx ends.
func (a *Agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		a.publishHeartbeat(false)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) publishHeartbeat(leaving bool) {
	hb := a.Heartbeat()
	hb.Leaving = leaving
	data, err := json.Marshal(hb)
	if err != nil {
		a.log.Error("encode heartbeat", "err", err)
		return
	}
	if err := a.cfg.Conn.Publish(a.space.Host(a.cfg.Host), data); err != nil {
		// Disconnected, it is buffered; a heartbeat that can never go
		// (too large) makes the host vanish from every view: said loudly.
		level := slog.LevelDebug
		if errors.Is(err, nats.ErrMaxPayload) {
			level = slog.LevelError
		}
		a.log.Log(context.Background(), level, "publish heartbeat", "bytes", len(data), "err", err)
	}
}

// Heartbeat returns what the agent announces about its host now.
func (a *Agent) Heartbeat() wire.Heartbeat {
	hb := wire.Heartbeat{
		Host:     a.cfg.Host,
		PID:      os.Getpid(),
		Started:  a.start,
		Interval: wire.Duration(a.cfg.HeartbeatInterval),
		Pools:    []wire.PoolInfo{},
		Workers:  []wire.WorkerInfo{},
	}
	if a.lookups != nil {
		hb.Lookups = a.lookups.took.Snapshot()
	}
	listed := wire.MaxHeldJobsPerHeartbeat // held job ids left to name
	for _, p := range a.poolList() {
		bp, src := p.running()
		if bp == nil {
			info := wire.PoolInfo{
				Name: p.spec.Name, Count: cmp.Or(p.spec.Count, broker.DefaultCount),
				Protocol: string(cmp.Or(p.spec.Protocol, broker.ProtocolChannel)), State: "waiting", Cmd: p.spec.Cmd,
			}
			if err := p.startErr(); err != nil {
				info.State, info.Error = string(broker.PoolFailed), err.Error()
				info.Reason = "cannot start: " + err.Error()
			}
			hb.Pools = append(hb.Pools, info)
			continue
		}
		info := wirePool(bp.Info())
		if src != nil {
			info.Held, info.HeldJobs = src.held(min(wire.MaxHeldJobsListed, listed))
			listed -= len(info.HeldJobs)
			info.Run, info.Wait = src.run.Snapshot(), src.wait.Snapshot()
		}
		hb.Pools = append(hb.Pools, info)
		for _, w := range bp.Workers() {
			hb.Workers = append(hb.Workers, wireWorker(w))
		}
	}
	return hb
}
