package conductor

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

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
)

// BatchConfig configures RunBatch.
type BatchConfig struct {
	// Type is the job type of every job in the batch. Required.
	Type string
	// Jobs generates the batch: it calls submit once per job payload and
	// returns. submit may be called from several goroutines. Required.
	Jobs func(submit func(payload any) error) error
	// OnJobEnd, if set, is called once for every job that ended (succeeded
	// or dead), from one goroutine.
	OnJobEnd func(job *client.Job)
	// Client submits to a running conductor, whose workers run the jobs.
	// Nil: RunBatch starts an embedded conductor and its own local workers,
	// and stops them at the end, so the program needs nothing else running.
	Client *client.Client
	// Workers is how many local worker processes to start. Default 2
	// without Client, 0 with one.
	Workers int
	// Command is the local workers' command line. Default: this program,
	// which must then serve jobs when worker.IsWorker() says it is a worker.
	Command []string
	// MaxAttempts bounds the attempts of each job run by local workers.
	// Default 3.
	MaxAttempts int
	// Logger receives the logs of the embedded conductor and workers.
	// Default: discard.
	Logger *slog.Logger
	// Lookups, Handlers, StatsInterval and OnStats are the embedded
	// conductor's (Config's): the lookups it seeds, the handlers of its
	// workers' requests, and its stats roll-ups (okanjo-conductor's
	// lookups, onWorkerMessage and stats). With Client they are the
	// running conductor's to set, and RunBatch refuses them.
	Lookups       map[string]map[string]any
	Handlers      map[string]RequestHandler
	StatsInterval time.Duration
	OnStats       func(*Stats)
}

// BatchResult sums up a finished batch.
type BatchResult struct {
	ID        string
	Total     int
	Succeeded int
	Dead      int
}

// RunBatch runs a batch the way okanjo-conductor did: the generator fills
// the queue, workers take the jobs one at a time, and RunBatch returns once
// every job has ended. A job that fails is retried; one that fails for good
// is counted in Dead, not lost.
func RunBatch(ctx context.Context, cfg BatchConfig) (BatchResult, error) {
	if cfg.Jobs == nil {
		return BatchResult{}, errors.New("conductor: batch has no Jobs generator")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Client != nil && (cfg.Lookups != nil || cfg.Handlers != nil || cfg.OnStats != nil || cfg.StatsInterval != 0) {
		return BatchResult{}, errors.New("conductor: Lookups, Handlers and stats are the embedded conductor's; with Client, set them on the conductor it reaches")
	}
	cl := cfg.Client
	if cl == nil {
		local, err := startLocal(ctx, cfg)
		if err != nil {
			return BatchResult{}, err
		}
		defer local.stop()
		cl = local.conductor.Client()
	}
	return runBatch(ctx, cl, cfg)
}

func runBatch(ctx context.Context, cl *client.Client, cfg BatchConfig) (BatchResult, error) {
	res := BatchResult{ID: uuid.Must(uuid.NewV7()).String()}
	ended := make(chan *client.Job, 1024)
	// Closed when RunBatch returns, so that an event arriving after that does
	// not block the subscription's goroutine on a channel no one reads.
	done := make(chan struct{})
	defer close(done)
	space, err := subject.New(cl.Config().Namespace)
	if err != nil {
		return res, fmt.Errorf("conductor: %w", err)
	}
	sub, err := cl.Conn().Subscribe(space.JobEvents(), func(m *nats.Msg) {
		if m.Header.Get(names.HeaderBatch) != res.ID {
			return
		}
		var j client.Job
		if json.Unmarshal(m.Data, &j) == nil && j.Status.Final() {
			select {
			case ended <- &j:
			case <-done:
			}
		}
	})
	if err != nil {
		return res, fmt.Errorf("conductor: subscribe to job events: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)

	pending := map[string]bool{}
	var mu sync.Mutex // guards pending and res.Total while the generator runs
	err = cfg.Jobs(func(payload any) error {
		id, err := cl.Submit(ctx, cfg.Type, payload, client.WithBatch(res.ID))
		if err != nil {
			return err
		}
		mu.Lock()
		pending[id] = true
		res.Total++
		mu.Unlock()
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("conductor: batch %s: %w", res.ID, err)
	}

	// Events may be lost (a reconnect); the stored states are not. When no
	// job has ended for a recheck interval, the pending ones are read.
	recheck := time.NewTicker(cl.Config().RecheckInterval)
	defer recheck.Stop()
	progressed := false
	end := func(j *client.Job) {
		if !pending[j.ID] {
			return
		}
		delete(pending, j.ID)
		progressed = true
		if j.Status == client.StatusSucceeded {
			res.Succeeded++
		} else {
			res.Dead++
		}
		if cfg.OnJobEnd != nil {
			cfg.OnJobEnd(j)
		}
	}
	for len(pending) > 0 {
		select {
		case j := <-ended:
			end(j)
		case <-recheck.C:
			if progressed {
				progressed = false
				continue
			}
			for id := range pending {
				if j, err := cl.Job(ctx, id); err == nil && j.Status.Final() {
					end(j)
				}
			}
		case <-ctx.Done():
			return res, fmt.Errorf("conductor: batch %s: %d of %d jobs not ended: %w", res.ID, len(pending), res.Total, ctx.Err())
		}
	}
	return res, nil
}

// local is an embedded conductor with a local agent running the batch's
// workers.
type local struct {
	conductor *Conductor
	agent     *agent.Agent
	nc        *nats.Conn
	dir       string
}

func startLocal(ctx context.Context, cfg BatchConfig) (*local, error) {
	if cfg.Type == "" {
		return nil, errors.New("conductor: batch has no Type")
	}
	cmd := cfg.Command
	if len(cmd) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("conductor: find this program to fork as workers: %w", err)
		}
		cmd = []string{self}
	}
	spec := broker.Spec{Name: cfg.Type, Count: cmp.Or(cfg.Workers, 2), Cmd: cmd, MaxAttempts: cmp.Or(cfg.MaxAttempts, 3)}
	dir, err := os.MkdirTemp("", "conductor-batch-")
	if err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	l := &local{dir: dir}
	// Both run until l.stop stops them, in order (the agent finishes its
	// jobs' outcomes while the conductor still stores them), not until
	// ctx ends: under ctx, a cancel would stop both at once.
	life := context.WithoutCancel(ctx)
	// Nothing listens: the conductor and the agent are in this process,
	// and no one else may reach their jobs.
	l.conductor, err = New(Config{DataDir: dir, NATSListen: "127.0.0.1:0", MemoryStorage: true, Logger: cfg.Logger, inProcess: true,
		Lookups: cfg.Lookups, Handlers: cfg.Handlers, StatsInterval: cfg.StatsInterval, OnStats: cfg.OnStats})
	if err == nil {
		err = l.conductor.Start(life)
	}
	if err == nil {
		l.nc, err = l.conductor.connectInProcess("conductor-batch-workers")
	}
	if err == nil {
		l.agent, err = agent.New(agent.Config{Conn: l.nc, Host: "local", Pools: []broker.Spec{spec}, Logger: cfg.Logger})
	}
	if err == nil {
		err = l.agent.Start(life)
	}
	if err != nil {
		l.stop()
		return nil, err
	}
	return l, nil
}

func (l *local) stop() {
	if l.agent != nil {
		l.agent.Stop()
	}
	if l.nc != nil {
		l.nc.Close()
	}
	if l.conductor != nil {
		l.conductor.Stop()
	}
	_ = os.RemoveAll(l.dir)
}
