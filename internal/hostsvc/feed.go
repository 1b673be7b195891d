package hostsvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// A page of cancelled ids holds at most pageIDs ids, or pageBytes of
// them: far below the smallest max payload a server may have.
const (
	pageIDs   = 2000
	pageBytes = 256 << 10
)

// feed follows the cancel bucket, holds its ids for the bucket's TTL,
// numbered in the order it learns them, and publishes each new one on
// the feed subject. A watch that ends (the bucket gone, the connection
// lost too long) begins again under a new epoch, the ids read anew.
type feed struct {
	*startstop.Func
	nc    *nats.Conn
	js    jetstream.JetStream
	space subject.Space
	log   *slog.Logger

	// publishing is whether the feed publishes the ids it learns
	// (Server.Lead); the pages are numbered either way.
	publishing atomic.Bool

	mu     sync.Mutex
	epoch  string
	seq    uint64            // the number of the last id published
	held   []heldID          // by number; the oldest first; some stale
	index  map[string]uint64 // id -> the number it is held under
	stale  int               // entries of held an id put again has left behind
	loaded bool              // every id stored when the watch began is held
	ttl    time.Duration
	pages  map[uint64]json.RawMessage // pages encoded, by after; cleared by a change
	// pagesBytes are the bytes of pages, at most maxPagesCached.
	pagesBytes int
}

type heldID struct {
	seq uint64
	id  string
	at  time.Time // when it was cancelled
}

func newFeed(nc *nats.Conn, js jetstream.JetStream, sp subject.Space, log *slog.Logger) *feed {
	f := &feed{nc: nc, js: js, space: sp, log: log}
	f.publishing.Store(true)
	f.Func = startstop.NewFunc(f.run)
	return f
}

// run follows the bucket until ctx ends, beginning again after a failure.
func (f *feed) run(ctx context.Context) {
	startstop.Retry(ctx, f.follow, func(err error, wait time.Duration) {
		f.log.Warn("cannot follow the cancelled jobs for the hosts; retrying", "err", err, "retry_in", wait)
	})
}

func (f *feed) follow(ctx context.Context) error {
	kv, err := f.js.KeyValue(ctx, f.space.CancelBucket())
	if err != nil {
		return err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	f.begin(st.TTL())
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return ctx.Err()
			}
			if e == nil {
				f.mu.Lock()
				f.loaded = true // the end of the ids stored before
				f.mu.Unlock()
				continue
			}
			f.add(e.Key(), e.Created())
		}
	}
}

// begin forgets the ids held, under a new epoch.
func (f *feed) begin(ttl time.Duration) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch, f.seq, f.held, f.loaded, f.ttl = hex.EncodeToString(b[:]), 0, nil, false, ttl
	f.index, f.stale, f.pages = map[string]uint64{}, 0, nil
}

// add holds id, cancelled at at, forgets the ids past the TTL, and
// publishes id numbered. Only run calls it: the feed is in order. An id
// put again is held under its new number only: its old entry is stale,
// skipped by page, and dropped once the stale are half of what is held.
func (f *feed) add(id string, at time.Time) {
	f.mu.Lock()
	f.seq++
	seq, epoch := f.seq, f.epoch
	if _, again := f.index[id]; again {
		f.stale++
	}
	f.index[id] = seq
	f.held = append(f.held, heldID{seq: seq, id: id, at: at})
	f.pages = nil
	n := 0
	for f.ttl > 0 && n < len(f.held)-1 && time.Since(f.held[n].at) > f.ttl {
		f.forget(f.held[n])
		n++
	}
	switch {
	case f.stale > 1024 && f.stale > (len(f.held)-n)/2:
		live := make([]heldID, 0, len(f.held)-n-f.stale)
		for _, h := range f.held[n:] {
			if f.index[h.id] == h.seq {
				live = append(live, h)
			}
		}
		f.held, f.stale = live, 0
	case n > 0:
		f.held = append(f.held[:0:0], f.held[n:]...)
	}
	f.mu.Unlock()
	if !f.publishing.Load() {
		return
	}
	m := nats.NewMsg(f.space.CancelFeed())
	m.Header.Set(wire.HeaderCancelEpoch, epoch)
	m.Header.Set(wire.HeaderCancelSeq, strconv.FormatUint(seq, 10))
	m.Data = []byte(id)
	if err := f.nc.PublishMsg(m); err != nil {
		f.log.Warn("publish a cancelled job to the hosts", "job", id, "err", err)
	}
}

// forget drops h, pruned, from the index (or the stale count).
func (f *feed) forget(h heldID) {
	if f.index[h.id] == h.seq {
		delete(f.index, h.id)
	} else {
		f.stale--
	}
}

// pageJSON is page, encoded: the pages of a read are the same for every
// host until the next id, so each is encoded once.
func (f *feed) pageJSON(after uint64) (json.RawMessage, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.pages[after]; ok {
		return b, true
	}
	p, ok := f.pageLocked(after)
	if !ok {
		return nil, false
	}
	b, _ := json.Marshal(p)
	if f.pages == nil {
		f.pages, f.pagesBytes = map[uint64]json.RawMessage{}, 0
	}
	if f.pagesBytes+len(b) <= maxPagesCached {
		// Past the bound (a host asking past every number), encoded for
		// each request rather than kept.
		f.pages[after] = b
		f.pagesBytes += len(b)
	}
	return b, true
}

// maxPagesCached bounds the bytes of the pages kept encoded: four whole
// pages.
const maxPagesCached = 4 * pageBytes

// page returns the ids numbered past after, false until the ids stored
// before the watch began are held.
func (f *feed) page(after uint64) (wire.CancelsPage, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pageLocked(after)
}

func (f *feed) pageLocked(after uint64) (wire.CancelsPage, bool) {
	if !f.loaded {
		return wire.CancelsPage{}, false
	}
	p := wire.CancelsPage{Epoch: f.epoch, TTL: f.ttl, IDs: []string{}}
	i := sort.Search(len(f.held), func(i int) bool { return f.held[i].seq > after })
	size := 0
	for ; i < len(f.held) && len(p.IDs) < pageIDs && size < pageBytes; i++ {
		if f.index[f.held[i].id] != f.held[i].seq {
			continue // put again since: held further on
		}
		p.IDs = append(p.IDs, f.held[i].id)
		size += len(f.held[i].id) + 3
		p.Last = f.held[i].seq
	}
	p.More = i < len(f.held)
	if !p.More {
		p.Last = f.seq
	}
	return p, true
}
