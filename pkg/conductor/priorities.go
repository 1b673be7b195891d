package conductor

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// priorityEvery is how often the leader looks for high and low jobs whose
// consumer is not made yet.
const priorityEvery = time.Second

// priorityRecheck is how long a subject's consumer, once found, is taken
// to exist while the subject holds jobs: a consumer removed meanwhile (by
// an operator, or lost) is made again within it. No host asks conductord
// for a missing high or low consumer, and the jobs it would deliver keep
// their subject held: without it they would wait for ever.
const priorityRecheck = 10 * time.Second

// priorityConsumers makes a job type's high and low consumers as their
// jobs come: a pool's start makes only its type's normal consumer (and
// those whose jobs are queued then, hostsvc.MakeConsumers), so that a type
// that never has high or low jobs costs the server one consumer, not
// three. Every priorityEvery the leader reads which high and low subjects
// of the job stream hold jobs (the stream's subject counts: no message is
// read) and makes the consumers missing, as the type's normal one is; a
// type no host serves gets none (its host's start makes them). The hosts'
// fetchers find a new consumer within their re-probe time
// (internal/agent, absentFor). It is a startstop.Service whose goroutine
// owns made.
type priorityConsumers struct {
	*startstop.Func
	js    jetstream.JetStream
	space subject.Space
	log   *slog.Logger
	lead  *leadership
	// made holds the subjects whose consumer exists, or whose type no
	// host serves, among those that held jobs at the last pass, with when
	// each was last looked at: a subject is forgotten once its jobs are
	// gone, and looked at again when more come, or priorityRecheck after
	// (its consumer may have been removed meanwhile).
	made map[string]time.Time
	// stream is the job stream, looked up once a term.
	stream jetstream.Stream
}

func newPriorityConsumers(c *Conductor) *priorityConsumers {
	p := &priorityConsumers{js: c.js, space: c.space, log: c.log.With("component", "consumers"), lead: c.lead}
	p.Func = startstop.NewFunc(p.run)
	return p
}

func (p *priorityConsumers) run(ctx context.Context) { p.lead.each(ctx, p.term) }

func (p *priorityConsumers) term(ctx context.Context) {
	p.made, p.stream = map[string]time.Time{}, nil
	t := time.NewTicker(priorityEvery)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := p.pass(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			p.log.Warn("make the consumers of high and low jobs", "stream", p.space.JobStream(), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pass makes the consumers of the high and low subjects that hold jobs
// and have none.
func (p *priorityConsumers) pass(ctx context.Context) error {
	if p.stream == nil {
		stream, err := p.js.Stream(ctx, p.space.JobStream())
		if err != nil {
			return err
		}
		p.stream = stream
	}
	info, err := p.stream.Info(ctx, jetstream.WithSubjectFilter(p.space.Job("*")+".*"))
	if err != nil {
		return err
	}
	held, now := info.State.Subjects, time.Now()
	for subj, at := range p.made {
		if held[subj] == 0 || now.Sub(at) >= priorityRecheck {
			delete(p.made, subj)
		}
	}
	for subj := range held {
		if _, ok := p.made[subj]; ok {
			continue
		}
		typ, prio := p.space.ParseJob(subj)
		if typ == "" || prio == string(wire.PriorityNormal) {
			continue
		}
		// Looked at again only at the recheck, whatever comes of it: one
		// subject failing (a consumer limit) neither stops the others nor
		// floods the log, and a type no host serves (!ok) gets its
		// consumers at a host's start (hostsvc.MakeConsumers).
		p.made[subj] = now
		ok, err := hostsvc.MakePriority(ctx, p.js, p.space, typ, wire.Priority(prio))
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			p.log.Warn("make the consumer of high or low jobs; retrying", "subject", subj, "in", priorityRecheck, "err", err)
			continue
		}
		if ok {
			p.log.Debug("the consumer of high or low jobs exists", "subject", subj)
		}
	}
	return nil
}
