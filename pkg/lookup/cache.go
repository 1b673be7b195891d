package lookup

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Defaults of a Cache's bounds.
const (
	DefaultCacheEntries = 10_000
	DefaultCacheBytes   = 16 << 20
)

// CacheConfig is a Cache's.
type CacheConfig struct {
	// Feed is the subject of the service's change feed (Store.Feed).
	Feed string
	// Beat is the feed's (FeedBeat if 0): a Cache that hears nothing on
	// the feed for two beats answers nothing from memory until it does.
	Beat time.Duration
	// MaxEntries and MaxBytes bound what it holds (DefaultCacheEntries,
	// DefaultCacheBytes if 0); past them, the least recently read go.
	MaxEntries int
	MaxBytes   int
	// OnChange, if set, is called with each key changed, and OnLost
	// when the Cache can no longer tell what changed (a gap, a
	// reconnect, a silent feed): copies of values read through the
	// Cache held elsewhere (a worker's) must then go. Each is called
	// with the Cache's lock held, in the order of the changes, and must
	// not block nor call the Cache.
	OnChange func(name, key string)
	OnLost   func()
}

// Cache is a Client whose gets it answers, when it can, from a copy in
// memory of the values it read, bounded, and kept true by the service's
// change feed (Store.Feed): a change of a key drops the key's copy. It
// answers from memory only while it follows the feed without a gap: from
// the feed's first message on, and while it has heard it within two
// beats; a number skipped, a reconnect, or a feed that falls silent
// drops every copy. A copy is kept only if no change of its key came
// while it was read. Its own sets and deletes drop their key's copy
// before they return, so that a host reads its own writes.
//
// A change made elsewhere reaches the Cache as fast as the feed's
// message (well under a millisecond on one server), and a message lost
// is found out at the next beat: a get may answer a value changed up to
// a beat ago (FeedBeat), and no older.
//
// Start follows the feed; Stop ends it. Without Start, a Cache is a
// Client.
type Cache struct {
	src backend    // where a get the Cache cannot answer goes, and every write
	nc  *nats.Conn // the feed's, for Start; nil for a Store's (Store.NewCache)
	cfg CacheConfig

	hits, misses atomic.Uint64

	mu      sync.Mutex
	entries map[string]*list.Element // by the bucket's key; each a *cached
	lru     list.List                // the most recently read first
	bytes   int
	last    uint64    // the revision of the feed's last message
	synced  bool      // following the feed without a gap
	heard   time.Time // the feed's last message came then
	gen     uint64    // counts the drops of every copy
	reading int       // gets on their way to the service
	// changed holds, while gets are on their way, the revision of the
	// last change of each key since (math.MaxUint64: one of the Cache's
	// own writes), at most MaxEntries of them: past that, gen moves on.
	changed map[string]uint64
	// floors holds, for keys whose answers the feed has not caught up
	// with, the least revision an answer must have to be kept
	// (keepLocked); a change of the key, or a drop of every copy, ends
	// it.
	floors map[string]uint64

	sub     *nats.Subscription
	stopped chan struct{} // closed by Stop: ends watchConn
	wg      sync.WaitGroup
}

// cached is one copy: a value, or none (ErrNotFound).
type cached struct {
	key   string
	value json.RawMessage
	rev   uint64
	found bool
}

// backend is what a Cache reads through and writes to: a Client of the
// service, or the Store itself.
type backend interface {
	Get(ctx context.Context, name, key string) (json.RawMessage, uint64, error)
	Set(ctx context.Context, name, key string, value json.RawMessage) (uint64, error)
	Delete(ctx context.Context, name, key string) error
	Keys(ctx context.Context, name string) ([]string, error)
}

// NewCache returns a Cache of the service under prefix, on nc: a host's.
func NewCache(nc *nats.Conn, prefix string, cfg CacheConfig) *Cache {
	c := newCache(NewClient(nc, prefix), cfg)
	c.nc = nc
	return c
}

// NewCache returns a Cache of the store that Feed keeps true itself, in
// order, before it publishes each change (Feed's local): the service's
// (WithCache). It needs no Start.
func (s *Store) NewCache(cfg CacheConfig) *Cache { return newCache(s, cfg) }

func newCache(src backend, cfg CacheConfig) *Cache {
	if cfg.Beat <= 0 {
		cfg.Beat = FeedBeat
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultCacheEntries
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultCacheBytes
	}
	return &Cache{
		src:     src,
		cfg:     cfg,
		entries: make(map[string]*list.Element),
		changed: make(map[string]uint64),
		floors:  make(map[string]uint64),
		stopped: make(chan struct{}),
	}
}

// Start follows the feed until Stop.
func (c *Cache) Start() error {
	if c.nc == nil {
		return errors.New("lookup: a store's cache follows its Feed, not a subject")
	}
	sub, err := c.nc.Subscribe(c.cfg.Feed, func(m *nats.Msg) {
		var f feedMsg
		if err := json.Unmarshal(m.Data, &f); err == nil {
			c.observe(f)
		}
	})
	if err != nil {
		return err
	}
	// Many changes at once are many messages: the feed's subscription
	// may hold that many before it drops some (then a gap is seen).
	if err := sub.SetPendingLimits(1<<16, 64<<20); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	c.sub = sub
	reconnected := c.nc.StatusChanged(nats.RECONNECTING, nats.CONNECTED, nats.CLOSED)
	c.wg.Go(func() {
		defer c.nc.RemoveStatusListener(reconnected)
		t := time.NewTicker(c.cfg.Beat / 2)
		defer t.Stop()
		for {
			select {
			case <-c.stopped:
				return
			case _, ok := <-reconnected:
				if !ok {
					reconnected = nil
					continue
				}
				// Changes may have gone by unseen: from the feed's next
				// message on.
				c.lose()
			case <-t.C:
				// A feed fallen silent: the copies held elsewhere go too.
				c.mu.Lock()
				if c.synced && !c.freshLocked() {
					c.dropAllLocked()
					c.synced = false
				}
				c.mu.Unlock()
			}
		}
	})
	return nil
}

// lose drops every copy until the feed's next message.
func (c *Cache) lose() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropAllLocked()
	c.synced = false
}

// Stop ends the following of the feed; the Cache answers from the
// service from then on.
func (c *Cache) Stop() {
	if c.sub == nil {
		return
	}
	_ = c.sub.Unsubscribe()
	close(c.stopped)
	c.wg.Wait()
	c.lose()
}

// Counts returns how many gets the Cache answered from memory (hits)
// and from the service (misses).
func (c *Cache) Counts() (hits, misses uint64) { return c.hits.Load(), c.misses.Load() }

// observe takes one message of the feed.
func (c *Cache) observe(f feedMsg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.heard = time.Now()
	switch {
	case f.Rev == 0:
		// A beat: in step if it names the last change seen.
		if !c.synced || f.Last != c.last {
			c.dropAllLocked()
		}
		c.last, c.synced = f.Last, true
	case c.synced && f.Rev == c.last+1:
		c.last = f.Rev
		c.changedLocked(f.Key, f.Rev)
	default:
		// A change skipped, or one out of order: every copy may be
		// stale.
		c.dropAllLocked()
		c.last, c.synced = f.Rev, true
	}
}

// changedLocked drops the copy of key, changed at revision rev, and notes
// the change for the gets on their way.
func (c *Cache) changedLocked(key string, rev uint64) {
	if e, ok := c.entries[key]; ok {
		c.removeLocked(e)
	}
	if f, ok := c.floors[key]; ok && rev >= f && rev != math.MaxUint64 {
		delete(c.floors, key)
	}
	if c.cfg.OnChange != nil {
		if name, k, ok := splitKey(key); ok {
			c.cfg.OnChange(name, k)
		}
	}
	if c.reading == 0 {
		return
	}
	if len(c.changed) >= c.cfg.MaxEntries {
		c.gen++ // too many to tell apart: none of the gets on their way is kept
		clear(c.changed)
		return
	}
	c.changed[key] = max(c.changed[key], rev)
}

func (c *Cache) dropAllLocked() {
	clear(c.entries)
	c.lru.Init()
	c.bytes = 0
	c.gen++
	clear(c.changed)
	clear(c.floors)
	if c.cfg.OnLost != nil {
		c.cfg.OnLost()
	}
}

func (c *Cache) removeLocked(e *list.Element) {
	v := c.lru.Remove(e).(*cached)
	delete(c.entries, v.key)
	c.bytes -= entrySize(v)
}

func entrySize(v *cached) int { return len(v.key) + len(v.value) + 64 }

// fresh reports whether the copies may be used: the feed followed, and
// heard within two beats.
func (c *Cache) freshLocked() bool {
	return c.synced && time.Since(c.heard) < 2*c.cfg.Beat
}

// Peek answers a get of key in lookup name from memory, if it can: ok
// false if not (the get must ask the service). held is false for a key
// known not to be held (a get's ErrNotFound). The value must not be
// changed: it is the copy.
func (c *Cache) Peek(name, key string) (value json.RawMessage, rev uint64, held, ok bool) {
	if check(name, key) != nil {
		return nil, 0, false, false // the get says why
	}
	k := storedKey(name, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, hit := c.entries[k]
	if !hit || !c.freshLocked() {
		return nil, 0, false, false
	}
	c.lru.MoveToFront(e)
	v := e.Value.(*cached)
	c.hits.Add(1)
	return v.value, v.rev, v.found, true
}

// Get returns the value of key in lookup name and its revision, from
// memory if it can (Peek), else from the service, keeping a copy. The
// value must not be changed: it may be the copy.
func (c *Cache) Get(ctx context.Context, name, key string) (json.RawMessage, uint64, error) {
	v, rev, _, err := c.GetWatched(ctx, name, key)
	return v, rev, err
}

// GetWatched is Get, and tells whether the answer is watched: whether
// every later change of the key will be told to OnChange (or OnLost), so
// that a copy of it held elsewhere stays true until then. An answer of
// ErrNotFound may be watched too.
func (c *Cache) GetWatched(ctx context.Context, name, key string) (value json.RawMessage, rev uint64, watched bool, err error) {
	if v, rev, held, ok := c.Peek(name, key); ok {
		if !held {
			return nil, 0, true, notFound(name, key)
		}
		return v, rev, true, nil
	}
	if err := check(name, key); err != nil {
		return nil, 0, false, err
	}
	c.misses.Add(1)
	k := storedKey(name, key)
	c.mu.Lock()
	gen, since := c.gen, c.last
	c.reading++
	c.mu.Unlock()
	v, rev, err := c.src.Get(ctx, name, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading--
	watched = c.keepLocked(k, gen, since, v, rev, err)
	if c.reading == 0 {
		clear(c.changed)
	}
	return v, rev, watched, err
}

// keepLocked decides whether the service's answer to a get of key k,
// begun at gen and revision since, is kept, and keeps it: only if no
// copy, and no reader, can have seen a later state of the key. The
// feed's change of a key may come after the service has answered the
// key's new value (to this Cache or another reader of it): an answer
// newer than the feed (a revision past the last change seen) is not
// kept, and until the feed reaches it no older answer of the key is kept
// either (floor); an answer that the key is not held, while a copy says
// it is, leaves neither (the key was deleted, or the answer is older:
// it cannot tell), and no answer of a revision seen is kept until the
// key's next change.
func (c *Cache) keepLocked(k string, gen, since uint64, v json.RawMessage, rev uint64, err error) bool {
	found := err == nil
	if !found && !errors.Is(err, ErrNotFound) {
		return false
	}
	if !c.freshLocked() || gen != c.gen {
		return false
	}
	e, has := c.entries[k]
	var held *cached
	if has {
		held = e.Value.(*cached)
	}
	switch {
	case found && rev > c.last:
		if has {
			c.removeLocked(e)
		}
		c.floorLocked(k, rev)
		return false
	case !found && held != nil && held.found:
		c.removeLocked(e)
		c.floorLocked(k, c.last+1)
		return false
	case found && held != nil && (!held.found || held.rev > rev):
		return false // the copy is newer
	case c.changed[k] > since || c.floors[k] > rev || !found && c.floors[k] > 0:
		return false
	}
	c.addLocked(&cached{key: k, value: v, rev: rev, found: found})
	return true
}

// floorLocked keeps answers of key k older than revision rev from being
// kept, until the key's next change.
func (c *Cache) floorLocked(k string, rev uint64) {
	if _, ok := c.floors[k]; !ok && len(c.floors) >= c.cfg.MaxEntries {
		c.dropAllLocked() // too many to follow: from scratch
		return
	}
	c.floors[k] = max(c.floors[k], rev)
}

func (c *Cache) addLocked(v *cached) {
	if old, ok := c.entries[v.key]; ok {
		c.removeLocked(old)
	}
	size := entrySize(v)
	if size > c.cfg.MaxBytes {
		return
	}
	for len(c.entries) >= c.cfg.MaxEntries || c.bytes+size > c.cfg.MaxBytes {
		c.removeLocked(c.lru.Back())
	}
	c.entries[v.key] = c.lru.PushFront(v)
	c.bytes += size
}

// Keys returns the keys lookup name holds, from the backend.
func (c *Cache) Keys(ctx context.Context, name string) ([]string, error) {
	return c.src.Keys(ctx, name)
}

// Set sets key in lookup name to value (Client.Set), and drops the
// key's copy.
func (c *Cache) Set(ctx context.Context, name, key string, value json.RawMessage) (uint64, error) {
	rev, err := c.src.Set(ctx, name, key, value)
	c.wrote(name, key)
	return rev, err
}

// Delete removes key from lookup name (Client.Delete), and drops the
// key's copy.
func (c *Cache) Delete(ctx context.Context, name, key string) error {
	err := c.src.Delete(ctx, name, key)
	c.wrote(name, key)
	return err
}

// wrote drops the copy of a key the Cache wrote (or may have: the write
// may have been stored and its answer lost), and keeps the gets on their
// way from keeping one: a get begun after the write returned reads it or
// a later one.
func (c *Cache) wrote(name, key string) {
	if checkName(name) != nil || checkKey(key) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changedLocked(storedKey(name, key), math.MaxUint64)
}
