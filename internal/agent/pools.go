package agent

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// The agent's pools: each runs on a goroutine of its own (runPool), counted
// in Agent.wg, from its start (at Start, by a reload or a command) until
// its context ends or it stops by itself (a shutdown command). Agent.mu
// guards the list; each pool's mu guards what its goroutine sets.

// pool is one broker pool and, for a channel pool, its job source. src and
// bp are set by the goroutine that starts the pool once its consumer exists;
// mu guards them against the heartbeat, commands and Stop.
type pool struct {
	spec   broker.Spec
	cancel context.CancelFunc // stops this pool only
	done   chan struct{}      // closed when its goroutine has returned

	mu  sync.Mutex
	src *source
	bp  *broker.Pool
	err error // why the pool could not start
}

// running returns the pool's broker pool and source, nil until started.
func (p *pool) running() (*broker.Pool, *source) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bp, p.src
}

// startErr is why the pool could not start, or nil.
func (p *pool) startErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// poolList returns the current pools.
func (a *Agent) poolList() []*pool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.pools)
}

// runningPools returns the broker pools running now.
func (a *Agent) runningPools() []*broker.Pool {
	var bps []*broker.Pool
	for _, p := range a.poolList() {
		if bp, _ := p.running(); bp != nil {
			bps = append(bps, bp)
		}
	}
	return bps
}

// findPool returns the pool named name, or nil.
func (a *Agent) findPool(name string) *pool {
	for _, p := range a.poolList() {
		if p.spec.Name == name {
			return p
		}
	}
	return nil
}

// startPoolLocked adds a pool of spec and starts its goroutine. a.mu is held.
func (a *Agent) startPoolLocked(spec broker.Spec) {
	ctx, cancel := context.WithCancel(a.ctx)
	p := &pool{spec: spec, cancel: cancel, done: make(chan struct{})}
	a.pools = append(a.pools, p)
	a.wg.Go(func() {
		defer close(p.done)
		a.runPool(ctx, p)
	})
}

// removePool stops p gracefully, waits for it, and forgets it.
func (a *Agent) removePool(p *pool) {
	p.cancel()
	<-p.done
	a.mu.Lock()
	a.pools = slices.DeleteFunc(a.pools, func(x *pool) bool { return x == p })
	a.mu.Unlock()
	a.logs.forget(p.spec.Name)
}

// runPool starts one pool, runs it until ctx ends or the pool stops (a
// shutdown command), then stops it.
func (a *Agent) runPool(ctx context.Context, p *pool) {
	log := a.log.With("pool", p.spec.Name)
	var src *source
	if p.spec.Protocol != broker.ProtocolNone {
		// A job cancelled while this host was away must not reach a
		// worker: the host knows every stored cancel first.
		if err := a.cancels.waitLoaded(ctx); err != nil {
			return
		}
		var err error
		if src, err = a.newSource(ctx, p.spec, log); err != nil {
			return // ctx ended
		}
		defer src.close()
	}
	bp, err := broker.NewPool(broker.Config{
		Spec: p.spec, Source: sourceOrNil(src), Host: a.cfg.Host, Logger: a.cfg.Logger,
		OnEvent: func(e broker.Event) {
			if src != nil {
				src.poolEvent(e.Kind)
			}
			a.publishEvent(e)
		},
		OnOutput:  a.logs.forward,
		OnRequest: a.workerRequests(p.spec.Name),
	})
	if err == nil {
		err = bp.Start(ctx)
	}
	if err != nil {
		log.Error("pool not started", "err", err)
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	p.src, p.bp = src, bp
	p.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-bp.Stopped():
	}
	if src != nil {
		// The jobs held ahead go back now, for other hosts, not once the
		// workers have finished theirs.
		src.pause()
	}
	bp.Stop()
}

// sourceOrNil keeps a nil *source from becoming a non-nil broker.Source.
func sourceOrNil(s *source) broker.Source {
	if s == nil {
		return nil
	}
	return s
}

// newSource makes sure the pool's consumer exists, retrying with backoff
// until the conductor has created the job stream, and returns its source.
func (a *Agent) newSource(ctx context.Context, spec broker.Spec, log *slog.Logger) (*source, error) {
	kvName := a.space.StateBucket()
	delay := 100 * time.Millisecond
	for {
		err := a.ensureConsumer(ctx, spec.Name)
		var kv jetstream.KeyValue
		if err == nil {
			kv, err = a.js.KeyValue(ctx, kvName)
		}
		var finalTTL time.Duration
		if err == nil {
			finalTTL, err = a.finalTTL(ctx, kv)
		}
		if err == nil {
			return newSource(sourceConfig{
				nc: a.cfg.Conn, js: a.js, api: a.api, kv: kv, space: a.space, typ: spec.Name, host: a.cfg.Host, finalTTL: finalTTL,
				workers: cmp.Or(spec.Count, broker.DefaultCount), prefetch: a.cfg.Prefetch,
				maxAttempts: cmp.Or(spec.MaxAttempts, broker.DefaultMaxAttempts), maxResult: a.cfg.MaxResult,
				maxCrashes: cmp.Or(spec.MaxCrashes, broker.DefaultMaxCrashes),
				expires:    a.cfg.PullExpires, ackWait: a.cfg.AckWait, log: log, cancelled: a.cancels.has,
				replays: &a.replays, svc: a.svc, payloads: payloads.NewReader(a.payloadSource(spec.Name), payloads.MaxSize),
			})
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		log.Warn("waiting for the conductor's job stream", "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// ensureConsumer asks conductord for the consumers of job type typ: one
// per priority, each filtered on the subject of its jobs. A host makes no
// consumer itself (internal/hostsvc).
func (a *Agent) ensureConsumer(ctx context.Context, typ string) error {
	return a.svc.Consumers(ctx, typ, a.cfg.AckWait)
}

// finalTTL reads how long the conductor keeps a final state in the state
// bucket once written (names.MetaFinalTTL); 0: for the bucket's TTL.
func (a *Agent) finalTTL(ctx context.Context, kv jetstream.KeyValue) (time.Duration, error) {
	st, err := a.js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return 0, err
	}
	cfg := st.CachedInfo().Config
	return wire.FinalTTL(cfg.Metadata, cfg.AllowMsgTTL)
}

// payloadSource is where the pool of type typ reads the payloads passed
// by reference: the bucket, or for a host with a credential of its own,
// conductord, which serves it its types' objects only.
func (a *Agent) payloadSource(typ string) payloads.Source {
	if a.svc.Proxied() {
		return a.svc.Payloads(typ)
	}
	return a.payloads
}
