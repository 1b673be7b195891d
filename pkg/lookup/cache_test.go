package lookup

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
)

const feedSubject = "conductor.default.lookup-changes"

// cacheBundle is a store served and fed, as conductord does, and a Cache
// of it on a connection of its own, as a host's.
type cacheBundle struct {
	ns     *server.Server
	store  *Store
	pubNC  *nats.Conn // the service's and the feed's
	cache  *Cache
	other  *Client // a writer elsewhere
	stopFd context.CancelFunc
	fedWG  sync.WaitGroup
}

func setupCache(t *testing.T, beat time.Duration, cfg CacheConfig) *cacheBundle {
	t.Helper()
	b := &cacheBundle{ns: natstest.Server(t)}
	b.pubNC = natstest.Conn(t, b.ns)
	js, err := jetstream.New(b.pubNC)
	require.NoError(t, err)
	b.store, err = Open(t.Context(), js, Config{Bucket: "conductor-default-lookups"})
	require.NoError(t, err)
	svc, err := Serve(b.pubNC, b.store, prefix)
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	b.stopFd = cancel
	b.fedWG.Go(func() { _ = b.store.Feed(ctx, b.pubNC, feedSubject, beat, nil) })
	t.Cleanup(func() { cancel(); b.fedWG.Wait() })

	cfg.Feed, cfg.Beat = feedSubject, beat
	b.cache = NewCache(natstest.Conn(t, b.ns), prefix, cfg)
	require.NoError(t, b.cache.Start())
	t.Cleanup(b.cache.Stop)
	b.other = NewClient(natstest.Conn(t, b.ns), prefix)
	require.Eventually(t, b.synced, 10*time.Second, time.Millisecond, "the cache follows the feed")
	return b
}

// seen waits until the Cache has heard of the change of revision rev.
func (b *cacheBundle) seen(t *testing.T, rev uint64) {
	t.Helper()
	require.Eventually(t, func() bool {
		b.cache.mu.Lock()
		defer b.cache.mu.Unlock()
		return b.cache.last >= rev
	}, 5*time.Second, 100*time.Microsecond, "the change of revision %d reaches the cache", rev)
}

func (b *cacheBundle) synced() bool {
	b.cache.mu.Lock()
	defer b.cache.mu.Unlock()
	return b.cache.freshLocked()
}

// peek is Peek's value, "" if not held, "-" if not answered from memory.
func (b *cacheBundle) peek(key string) string {
	v, _, held, ok := b.cache.Peek("rates", key)
	switch {
	case !ok:
		return "-"
	case !held:
		return ""
	}
	return string(v)
}

// A get read once is answered from memory after; a change made
// elsewhere drops the copy within the feed's transit; the Cache's own
// write drops it before the write returns; a key not held is known not
// held, until it is set.
func TestCache_HitsAndChanges(t *testing.T) {
	t.Parallel()
	b := setupCache(t, time.Second, CacheConfig{})
	ctx := t.Context()
	rev, err := b.other.Set(ctx, "rates", "usd", json.RawMessage(`1.1`))
	require.NoError(t, err)
	b.seen(t, rev) // else the get may overlap the change, and keep nothing

	require.Equal(t, "-", b.peek("usd"))
	v, _, err := b.cache.Get(ctx, "rates", "usd")
	require.NoError(t, err)
	require.Equal(t, `1.1`, string(v))
	require.Equal(t, `1.1`, b.peek("usd"), "kept")
	hits, misses := b.cache.Counts()
	assert.Equal(t, uint64(1), hits)
	assert.Equal(t, uint64(1), misses)

	rev, err = b.other.Set(ctx, "rates", "usd", json.RawMessage(`1.2`))
	require.NoError(t, err)
	b.seen(t, rev)
	require.Equal(t, "-", b.peek("usd"), "the change drops the copy")
	v, _, err = b.cache.Get(ctx, "rates", "usd")
	require.NoError(t, err)
	require.Equal(t, `1.2`, string(v))

	// Its own write: read back at once.
	rev, err = b.cache.Set(ctx, "rates", "usd", json.RawMessage(`1.3`))
	require.NoError(t, err)
	v, _, err = b.cache.Get(ctx, "rates", "usd")
	require.NoError(t, err)
	require.Equal(t, `1.3`, string(v), "the host reads its own write")
	b.seen(t, rev)
	require.NoError(t, b.cache.Delete(ctx, "rates", "usd"))
	_, _, err = b.cache.Get(ctx, "rates", "usd")
	require.ErrorIs(t, err, ErrNotFound)
	b.seen(t, rev+1) // the delete
	_, _, err = b.cache.Get(ctx, "rates", "usd")
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, "", b.peek("usd"), "known not held")
	_, _, err = b.cache.Get(ctx, "rates", "usd")
	require.ErrorIs(t, err, ErrNotFound, "from memory")
	require.EqualError(t, err, `lookup: not found: rates/"usd"`)

	_, err = b.other.Set(ctx, "rates", "usd", json.RawMessage(`2`))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return b.peek("usd") == "-" }, 5*time.Second, 100*time.Microsecond)

	// A refused get is not kept.
	_, _, err = b.cache.Get(ctx, "rates", "a//b")
	require.ErrorIs(t, err, ErrInvalid)
}

// A number skipped in the feed, a beat that names another revision, and
// a feed that falls silent each drop every copy: the Cache cannot tell
// which may be stale.
func TestCache_GapsDropEverything(t *testing.T) {
	t.Parallel()
	const beat = 100 * time.Millisecond
	b := setupCache(t, beat, CacheConfig{})
	ctx := t.Context()
	_, err := b.other.Set(ctx, "rates", "usd", json.RawMessage(`1`))
	require.NoError(t, err)
	fill := func() {
		t.Helper()
		require.Eventually(t, func() bool {
			_, _, err := b.cache.Get(ctx, "rates", "usd")
			return err == nil && b.peek("usd") == "1"
		}, 5*time.Second, time.Millisecond)
	}
	forge := func(m feedMsg) {
		data, _ := json.Marshal(m)
		require.NoError(t, b.pubNC.Publish(feedSubject, data))
		require.NoError(t, b.pubNC.Flush())
	}
	last := func() uint64 {
		b.cache.mu.Lock()
		defer b.cache.mu.Unlock()
		return b.cache.last
	}

	fill()
	forge(feedMsg{Rev: last() + 2, Key: "other.key"}) // one skipped
	require.Eventually(t, func() bool { return b.peek("usd") == "-" }, 5*time.Second, time.Millisecond, "a gap drops the copies")

	fill()
	forge(feedMsg{Last: last() + 1}) // a change this cache never saw
	require.Eventually(t, func() bool { return b.peek("usd") == "-" }, 5*time.Second, time.Millisecond, "a beat past the last change drops the copies")

	fill()
	b.stopFd()
	require.Eventually(t, func() bool { return b.peek("usd") == "-" }, 5*time.Second, time.Millisecond, "a silent feed: nothing from memory")
	_, _, err = b.cache.Get(ctx, "rates", "usd")
	require.NoError(t, err, "still answered, by the service")
}

// Bounded: past MaxEntries or MaxBytes the least recently read go.
func TestCache_Bounded(t *testing.T) {
	t.Parallel()
	b := setupCache(t, time.Second, CacheConfig{MaxEntries: 10, MaxBytes: 4096})
	ctx := t.Context()
	var rev uint64
	for i := range 30 {
		var err error
		rev, err = b.other.Set(ctx, "rates", strconv.Itoa(i), json.RawMessage(strconv.Itoa(i)))
		require.NoError(t, err)
	}
	b.seen(t, rev)
	require.Eventually(t, func() bool {
		for i := range 30 {
			if _, _, err := b.cache.Get(ctx, "rates", strconv.Itoa(i)); err != nil {
				return false
			}
		}
		return len(b.cache.entries) == 10
	}, 5*time.Second, time.Millisecond)
	require.Equal(t, "29", b.peek("29"))
	require.Equal(t, "-", b.peek("0"), "the least recently read went")

	big := json.RawMessage(`"` + string(make([]byte, 0)) + `"`)
	for range 1000 {
		big = append(big[:len(big)-1], 'x', '"')
	}
	_, err := b.other.Set(ctx, "rates", "big", big)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, _, err := b.cache.Get(ctx, "rates", "big")
		return err == nil && b.peek("big") != "-"
	}, 5*time.Second, time.Millisecond)
	b.cache.mu.Lock()
	defer b.cache.mu.Unlock()
	assert.LessOrEqual(t, b.cache.bytes, 4096)
	assert.LessOrEqual(t, len(b.cache.entries), 10)
}

// Under concurrent writes, no reader reads a value older than one it
// read before, and once a write's change has reached the Cache no read
// answers an older value; when the writes stop, every reader reads the
// last. How long a read may lag a write elsewhere is logged: the feed's
// transit.
func TestCache_ConcurrentWrites(t *testing.T) {
	t.Parallel()
	b := setupCache(t, time.Second, CacheConfig{})
	ctx := t.Context()
	const writes = 300
	_, err := b.other.Set(ctx, "rates", "k", json.RawMessage(`0`))
	require.NoError(t, err)

	var (
		mu    sync.Mutex
		acked = make([]time.Time, writes+1) // when write i was answered
	)
	done := make(chan struct{})
	var wg sync.WaitGroup
	type read struct {
		v    int
		from time.Time // the read began
	}
	reads := make([][]read, 4)
	for r := range reads {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				from := time.Now()
				v, _, err := b.cache.Get(ctx, "rates", "k")
				if !assert.NoError(t, err) {
					return
				}
				n, _ := strconv.Atoi(string(v))
				reads[r] = append(reads[r], read{n, from})
			}
		})
	}
	for i := 1; i <= writes; i++ {
		_, err := b.other.Set(ctx, "rates", "k", json.RawMessage(strconv.Itoa(i)))
		require.NoError(t, err)
		mu.Lock()
		acked[i] = time.Now()
		mu.Unlock()
	}
	require.Eventually(t, func() bool {
		v, _, err := b.cache.Get(ctx, "rates", "k")
		return err == nil && string(v) == strconv.Itoa(writes)
	}, 5*time.Second, time.Millisecond, "the last write reaches the cache")
	close(done)
	wg.Wait()

	var lag time.Duration
	total := 0
	for r, rs := range reads {
		for i := 1; i < len(rs); i++ {
			require.GreaterOrEqual(t, rs[i].v, rs[i-1].v, "reader %d read %d after %d", r, rs[i].v, rs[i-1].v)
		}
		for _, rd := range rs {
			total++
			// The read began after write v+1 was answered: it lags.
			if rd.v < writes && rd.from.After(acked[rd.v+1]) {
				lag = max(lag, rd.from.Sub(acked[rd.v+1]))
			}
		}
	}
	t.Logf("%d reads, %d writes; the most a read began after a newer write was answered: %v", total, writes, lag)
	require.Less(t, lag, time.Second, "a read lags a write by at most a beat")
}

// The service's own cache (Store.NewCache, WithCache), kept true by the
// Feed before it publishes: a reader told of a change by the feed, and
// asking the service after, reads the change, though it was written to
// the store behind the service's back and the service had the old value
// in memory.
func TestCache_ServiceCacheAheadOfTheFeed(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	store, err := Open(t.Context(), js, Config{Bucket: "conductor-default-lookups"})
	require.NoError(t, err)
	local := store.NewCache(CacheConfig{})
	svc, err := Serve(nc, store, prefix, WithCache(local))
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = store.Feed(ctx, nc, feedSubject, time.Second, local) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	reader := natstest.Conn(t, ns)
	changes := make(chan *nats.Msg, 16)
	sub, err := reader.ChanSubscribe(feedSubject, changes)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, reader.Flush())
	client := NewClient(reader, prefix)
	// The feed's first beat says its watch has begun: a change stored
	// before would be told by beats only (the watch resumes past it).
	select {
	case <-changes:
	case <-time.After(10 * time.Second):
		t.Fatal("no first beat on the feed")
	}
	waitChange := func(rev uint64) {
		t.Helper()
		deadline := time.After(5 * time.Second) // for the whole wait, beats or not
		for {
			select {
			case m := <-changes:
				var f feedMsg
				require.NoError(t, json.Unmarshal(m.Data, &f))
				if f.Rev >= rev {
					return
				}
			case <-deadline:
				t.Fatalf("no change %d on the feed", rev)
			}
		}
	}
	for i := range 200 {
		// The service holds value i: read once the feed caught up.
		rev, err := store.Set(t.Context(), "rates", "k", json.RawMessage(strconv.Itoa(i)))
		require.NoError(t, err)
		waitChange(rev)
		for try := 0; ; try++ {
			v, _, err := client.Get(t.Context(), "rates", "k")
			require.NoError(t, err)
			require.Equal(t, strconv.Itoa(i), string(v), "the change of revision %d was on the feed", rev)
			if _, _, held, ok := local.Peek("rates", "k"); ok && held {
				break
			}
			if try > 1000 {
				local.mu.Lock()
				t.Fatalf("not kept: last %d synced %v heard %v floors %v gen %d", local.last, local.synced, time.Since(local.heard), local.floors, local.gen)
			}
		}
	}
	hits, _ := local.Counts()
	require.NotZero(t, hits, "answered from memory")
}
