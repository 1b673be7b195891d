package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/lookup"
)

// lookups answers the lookups of the pools' workers
// (broker.Config.OnRequest) from conductord's lookup service, and the
// gets it can from the host's cache of it (lookup.Cache), at once on the
// worker's session goroutine. Each
// request it cannot answer at once is asked on a goroutine of its own,
// which ends with the request (bounded by the service's wait) or with
// ctx; the pools bound the requests in flight per worker, and
// maxLookupsInFlight bounds them per host, past which a request is
// answered busy at once.
type lookups struct {
	ctx   context.Context
	wg    *sync.WaitGroup // the agent's
	cache *lookup.Cache
	log   *slog.Logger
	slots chan struct{} // one per request in flight
	// took counts the lookups conductord answered by how long they took
	// (the heartbeat's).
	took wire.Observations
}

// maxLookupsInFlight bounds the lookups a host has on the network at
// once.
const maxLookupsInFlight = 1024

// newLookups returns the host's lookups, its cache following conductord's
// feed until stop; pools is called for the pools to tell of a change (a
// worker may keep a value it read: broker.Reply.Watched).
func newLookups(ctx context.Context, wg *sync.WaitGroup, nc *nats.Conn, sp subject.Space, log *slog.Logger, pools func() []*broker.Pool) *lookups {
	l := &lookups{
		ctx: ctx,
		wg:  wg,
		cache: lookup.NewCache(nc, sp.LookupService(), lookup.CacheConfig{
			Feed: sp.LookupFeed(),
			OnChange: func(name, key string) {
				for _, bp := range pools() {
					bp.LookupChanged(name, key)
				}
			},
			OnLost: func() {
				for _, bp := range pools() {
					bp.LookupsLost()
				}
			},
		}),
		log:   log,
		slots: make(chan struct{}, maxLookupsInFlight),
	}
	if err := l.cache.Start(); err != nil {
		log.Warn("cannot follow the lookups' changes; every lookup asks conductord", "err", err)
	}
	return l
}

// stop stops the cache's following of the feed.
func (l *lookups) stop() { l.cache.Stop() }

// request answers r, a worker's lookup.
func (l *lookups) request(r broker.Request, answer func(broker.Reply)) {
	switch r.Do {
	case broker.LookupGet, broker.LookupSet, broker.LookupDel, broker.LookupKeys:
	default:
		answer(broker.Reply{Error: fmt.Sprintf("unknown lookup action %q: get, set, del or keys", r.Do), Code: 400})
		return
	}
	if r.Do == broker.LookupGet {
		if v, rev, held, ok := l.cache.Peek(r.Name, r.Key); ok {
			if !held {
				answer(broker.Reply{Error: fmt.Sprintf("%v: %s/%.80q", lookup.ErrNotFound, r.Name, r.Key), Code: 404, Watched: true})
				return
			}
			answer(broker.Reply{Value: v, Rev: rev, Watched: true})
			return
		}
	}
	select {
	case l.slots <- struct{}{}:
	default:
		answer(broker.Reply{Error: fmt.Sprintf("too many lookups in flight on this host (%d)", maxLookupsInFlight), Code: 429})
		return
	}
	l.wg.Go(func() {
		defer func() { <-l.slots }()
		start := time.Now()
		rep := l.ask(r)
		l.took.Observe(time.Since(start))
		answer(rep)
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
		rep.Value, rep.Rev, rep.Watched, err = l.cache.GetWatched(ctx, r.Name, r.Key)
	case broker.LookupSet:
		rep.Rev, err = l.cache.Set(ctx, r.Name, r.Key, r.Value)
	case broker.LookupDel:
		err = l.cache.Delete(ctx, r.Name, r.Key)
	case broker.LookupKeys:
		rep.Keys, err = l.cache.Keys(ctx, r.Name)
	}
	if err != nil {
		return broker.Reply{Error: err.Error(), Code: lookup.Code(err), Watched: rep.Watched}
	}
	return rep
}
