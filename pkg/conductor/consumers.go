package conductor

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
)

// DefaultConsumerIdle is Config.ConsumerIdle's default, and
// MinConsumerIdle its least: a host restarting, or a network cut a few
// minutes long, must not cost its types their consumers.
const (
	DefaultConsumerIdle = time.Hour
	MinConsumerIdle     = 5 * time.Minute
)

// consumerSweep removes the job stream's consumers of the job types no
// host has served for Config.ConsumerIdle. Every consumer costs the
// server on every ack of the stream, whatever its type (the work queue
// asks each whether it still wants the message), and the consumers of a
// type outlive it: a stream of job types that come and go would grow them
// without end. Nothing is lost by a removal: the type's jobs stay in the
// stream, and a host that serves the type again has its consumers made
// afresh (at its start, or when its pulls find them gone), which deliver
// them from the first. A consumer with jobs delivered and not acked, or
// with pull requests waiting, is kept whatever the hosts say.
//
// Its passes run while this conductord leads, every ConsumerIdle/4 (at
// most a minute apart); it is a startstop.Service whose goroutine owns
// served.
type consumerSweep struct {
	*startstop.Func
	js    jetstream.JetStream
	space subject.Space
	idle  time.Duration
	log   *slog.Logger
	lead  *leadership
	// types lists the job types the hosts serve now: those of the live
	// hosts' pools and of the hosts lost lately, which may come back.
	types func() []string
	// served is when each type with a consumer was last seen served, or
	// the term's start: a conductord just elected has not heard every
	// host yet.
	served map[string]time.Time
	// onPass, if set, is called with the types whose consumers a pass
	// removed: a test signal, nil in production.
	onPass func(removed []string)
}

func newConsumerSweep(c *Conductor) *consumerSweep {
	s := &consumerSweep{
		js: c.js, space: c.space, idle: c.cfg.ConsumerIdle, log: c.log.With("component", "consumers"), lead: c.lead,
		types: func() []string {
			var types []string
			for _, h := range append(c.liveHosts(), c.lostHosts()...) {
				for _, p := range h.Pools {
					types = append(types, p.Name)
				}
			}
			return types
		},
		onPass: c.onConsumerPass,
	}
	s.Func = startstop.NewFunc(s.run)
	return s
}

func (s *consumerSweep) run(ctx context.Context) { s.lead.each(ctx, s.term) }

// term sweeps every min(idle/4, 1m) until ctx ends.
func (s *consumerSweep) term(ctx context.Context) {
	s.served = map[string]time.Time{}
	start := time.Now()
	every := min(s.idle/4, time.Minute)
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		removed, err := s.pass(pctx, start, time.Now())
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("remove the consumers of job types no host serves", "stream", s.space.JobStream(), "err", err)
		}
		if s.onPass != nil {
			s.onPass(removed)
		}
		t.Reset(every)
	}
}

// pass removes the consumers of the types not served since now-idle (nor
// since the term's start), and returns those types.
func (s *consumerSweep) pass(ctx context.Context, start, now time.Time) (removed []string, err error) {
	for _, typ := range s.types() {
		s.served[typ] = now
	}
	stream, err := s.js.Stream(ctx, s.space.JobStream())
	if err != nil {
		return nil, err
	}
	idle := map[string][]string{} // type -> its consumers, while all may go
	busy := map[string]bool{}
	list := stream.ListConsumers(ctx)
	for ci := range list.Info() {
		typ, _ := s.space.ParseConsumer(ci.Name)
		if typ == "" {
			continue // not one of ours
		}
		last, ok := s.served[typ]
		if !ok {
			last = start
			s.served[typ] = start
		}
		if now.Sub(last) < s.idle || ci.NumAckPending > 0 || ci.NumWaiting > 0 {
			busy[typ] = true
			continue
		}
		idle[typ] = append(idle[typ], ci.Name)
	}
	if err := list.Err(); err != nil {
		return nil, err
	}
	for typ, names := range idle {
		if busy[typ] {
			continue // the type's consumers go together
		}
		for _, name := range names {
			if err := stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return removed, err
			}
		}
		removed = append(removed, typ)
		s.log.Info("removed the consumers of a job type no host has served lately; its jobs stay queued, for a host that serves it again",
			"type", typ, "consumers", len(names), "unserved_for", now.Sub(s.served[typ]).Round(time.Second))
		delete(s.served, typ)
	}
	// Forget the types that have no consumer left (bounds served).
	for typ := range s.served {
		if _, ok := idle[typ]; !ok && !busy[typ] {
			delete(s.served, typ)
		}
	}
	return removed, nil
}
