package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/lookup"
)

// lookups answers the lookups of the pools' workers
// (broker.Config.OnRequest) from conductord's lookup service. Each
// request it cannot answer at once is asked on a goroutine of its own,
// which ends with the request (bounded by the service's wait) or with
// ctx; the pools bound the requests in flight per worker, and
// maxLookupsInFlight bounds them per host, past which a request is
// answered busy at once.
type lookups struct {
	ctx    context.Context
	wg     *sync.WaitGroup // the agent's
	client *lookup.Client
	log    *slog.Logger
	slots  chan struct{} // one per request in flight
}

// maxLookupsInFlight bounds the lookups a host has on the network at
// once.
const maxLookupsInFlight = 1024

func newLookups(ctx context.Context, wg *sync.WaitGroup, nc *nats.Conn, sp subject.Space, log *slog.Logger) *lookups {
	return &lookups{
		ctx:    ctx,
		wg:     wg,
		client: lookup.NewClient(nc, sp.LookupService()),
		log:    log,
		slots:  make(chan struct{}, maxLookupsInFlight),
	}
}

// request answers r, a worker's request.
func (l *lookups) request(r broker.Request, answer func(broker.Reply)) {
	if r.Kind != broker.RequestLookup {
		answer(broker.Reply{Error: fmt.Sprintf("unknown request %q", r.Kind), Code: 400})
		return
	}
	switch r.Do {
	case broker.LookupGet, broker.LookupSet, broker.LookupDel, broker.LookupKeys:
	default:
		answer(broker.Reply{Error: fmt.Sprintf("unknown lookup action %q: get, set, del or keys", r.Do), Code: 400})
		return
	}
	select {
	case l.slots <- struct{}{}:
	default:
		answer(broker.Reply{Error: fmt.Sprintf("too many lookups in flight on this host (%d)", maxLookupsInFlight), Code: 429})
		return
	}
	l.wg.Go(func() {
		defer func() { <-l.slots }()
		answer(l.ask(r))
	})
}

// ask asks the service for r.
func (l *lookups) ask(r broker.Request) broker.Reply {
	var (
		rep broker.Reply
		err error
	)
	ctx := l.ctx
	switch r.Do {
	case broker.LookupGet:
		rep.Value, rep.Rev, err = l.client.Get(ctx, r.Name, r.Key)
	case broker.LookupSet:
		rep.Rev, err = l.client.Set(ctx, r.Name, r.Key, r.Value)
	case broker.LookupDel:
		err = l.client.Delete(ctx, r.Name, r.Key)
	case broker.LookupKeys:
		rep.Keys, err = l.client.Keys(ctx, r.Name)
	}
	if err != nil {
		return broker.Reply{Error: err.Error(), Code: lookup.Code(err)}
	}
	return rep
}
