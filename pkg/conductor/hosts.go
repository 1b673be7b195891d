package conductor

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/wire"
)

// Worker describes one worker process on one host: see GET /v1/workers.
type Worker = wire.WorkerInfo

// Host is the last heartbeat of one workerd.
type Host = wire.Heartbeat

// hostRegistry holds the last heartbeat of every live host. A host that
// misses three heartbeats (or says it is leaving) is dropped. mu guards
// hosts: the heartbeat subscription writes, HTTP handlers and pool commands
// read. complete and now are set at construction and only read after.
type hostRegistry struct {
	mu    sync.Mutex
	hosts map[string]hostEntry
	// complete is when every live host has had the time to announce itself
	// since the registry started listening.
	complete time.Time
	now      func() time.Time
}

type hostEntry struct {
	hb   wire.Heartbeat
	seen time.Time
}

// newHostRegistry returns a registry that starts listening now and has heard
// every live host after wait.
func newHostRegistry(wait time.Duration) *hostRegistry {
	return &hostRegistry{hosts: make(map[string]hostEntry), complete: time.Now().Add(wait), now: time.Now}
}

func (r *hostRegistry) receive(m *nats.Msg) {
	var hb wire.Heartbeat
	if err := json.Unmarshal(m.Data, &hb); err != nil || hb.Host == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if hb.Leaving {
		delete(r.hosts, hb.Host)
		return
	}
	r.hosts[hb.Host] = hostEntry{hb: hb, seen: r.now()}
}

// await blocks until the registry has listened long enough to have heard
// every live host, or ctx ends.
func (r *hostRegistry) await(ctx context.Context) error {
	d := r.complete.Sub(r.now())
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// live returns the heartbeats of the live hosts, sorted by host id, and
// forgets hosts that went silent.
func (r *hostRegistry) live() []wire.Heartbeat {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := make([]wire.Heartbeat, 0, len(r.hosts))
	for id, e := range r.hosts {
		if now.Sub(e.seen) > 3*max(time.Duration(e.hb.Interval), time.Second) {
			delete(r.hosts, id)
			continue
		}
		out = append(out, e.hb)
	}
	slices.SortFunc(out, func(a, b wire.Heartbeat) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// workers lists every worker of every live host.
func (r *hostRegistry) workers() []Worker {
	out := []Worker{}
	for _, hb := range r.live() {
		out = append(out, hb.Workers...)
	}
	return out
}

// running returns the ids of the live hosts that run pool (any pool, for
// AllPools), sorted; with host set, only that one, if it does.
func (r *hostRegistry) running(pool, host string) []string {
	var out []string
	for _, hb := range r.live() {
		if host != "" && hb.Host != host {
			continue
		}
		if pool == wire.AllPools && len(hb.Pools) > 0 || slices.ContainsFunc(hb.Pools, func(p wire.PoolInfo) bool { return p.Name == pool }) {
			out = append(out, hb.Host)
		}
	}
	return out
}
