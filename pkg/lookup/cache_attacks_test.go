package lookup

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
)

// A get with an empty key (a worker's lookup op without a key, or
// Job.Lookup(ctx, name, "")) is refused as invalid, and does not panic:
// the agent calls Peek on the worker's session goroutine, so a panic
// there took workerd down with every worker on the host (found by an
// outside review).
func TestCache_EmptyKeyRefused(t *testing.T) {
	t.Parallel()
	b := setupCache(t, 50*time.Millisecond, CacheConfig{})
	require.NotPanics(t, func() { _, _, _, _ = b.cache.Peek("rates", "") }, "Peek of an empty key")
	require.NotPanics(t, func() {
		_, _, err := b.cache.Get(t.Context(), "rates", "")
		require.True(t, errors.Is(err, ErrInvalid), "an empty key is invalid: %v", err)
	}, "Get of an empty key")
}

// A Feed that starts again (startstop.Retry after the watch ended, or a
// conductord restart) reads the bucket's last revision, then starts its
// watch: a change stored between the two is published all the same.
// Found by an outside review: the watch took only the updates after it
// began, so such a change was never published, every beat after told the
// revision before it, and a Cache that had followed the Feed at that
// revision answered the key's old value from memory for as long as
// nothing else changed.
func TestFeed_RestartPublishesTheChangesOfItsStart(t *testing.T) {
	t.Parallel()
	const beat = 200 * time.Millisecond
	ns := natstest.Server(t)
	pubNC := natstest.Conn(t, ns)
	writer := NewClient(natstest.Conn(t, ns), prefix)

	// The store's JetStream calls a hook once the status of the bucket
	// is in: there, armed, a write elsewhere lands before the watch.
	var armed atomic.Bool
	var windowRev atomic.Uint64
	js, err := jetstream.New(pubNC, jetstream.WithClientTrace(&jetstream.ClientTrace{
		ResponseReceived: func(subj string, _ []byte, _ nats.Header) {
			if !strings.Contains(subj, "STREAM.INFO") || !armed.CompareAndSwap(true, false) {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			rev, err := writer.Set(ctx, "rates", "k", json.RawMessage(`"new"`))
			if err == nil {
				windowRev.Store(rev)
			}
		},
	}))
	require.NoError(t, err)
	store, err := Open(t.Context(), js, Config{Bucket: "conductor-default-lookups"})
	require.NoError(t, err)
	svc, err := Serve(pubNC, store, prefix)
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })

	var feeds sync.WaitGroup
	ctx1, stop1 := context.WithCancel(context.Background())
	feeds.Go(func() { _ = store.Feed(ctx1, pubNC, feedSubject, beat, nil) })
	t.Cleanup(func() { stop1(); feeds.Wait() })

	cache := NewCache(natstest.Conn(t, ns), prefix, CacheConfig{Feed: feedSubject, Beat: beat})
	require.NoError(t, cache.Start())
	t.Cleanup(cache.Stop)
	fresh := func() bool { cache.mu.Lock(); defer cache.mu.Unlock(); return cache.freshLocked() }
	require.Eventually(t, fresh, 10*time.Second, time.Millisecond)

	rev1, err := writer.Set(t.Context(), "rates", "k", json.RawMessage(`"old"`))
	require.NoError(t, err)
	require.Eventually(t, func() bool { cache.mu.Lock(); defer cache.mu.Unlock(); return cache.last >= rev1 }, 5*time.Second, time.Millisecond)
	v, _, err := cache.Get(t.Context(), "rates", "k")
	require.NoError(t, err)
	require.JSONEq(t, `"old"`, string(v))
	_, _, _, ok := cache.Peek("rates", "k")
	require.True(t, ok, "the copy is kept")

	// The feed starts again; the write lands in its window.
	stop1()
	feeds.Wait()
	armed.Store(true)
	ctx2, stop2 := context.WithCancel(context.Background())
	t.Cleanup(stop2)
	feeds.Go(func() { _ = store.Feed(ctx2, pubNC, feedSubject, beat, nil) })
	require.Eventually(t, func() bool { return windowRev.Load() != 0 }, 5*time.Second, time.Millisecond, "the write in the window was acknowledged")

	require.Eventually(t, func() bool {
		v, _, err := cache.Get(t.Context(), "rates", "k")
		return err == nil && string(v) == `"new"`
	}, 10*beat+time.Second, 5*time.Millisecond,
		"the write of revision %d, acknowledged, is read within a few beats (the host kept answering the old value from memory)", windowRev.Load())
}

// An invalid name is answered by no copy: "rates.x"/"y" is the bucket
// key of "rates"/"x.y". Found by an outside review: Peek answered it from
// that copy; the agent marked the answer watched, the worker kept it
// under ("rates.x", "y"), and the key's changes, told as ("rates",
// "x.y"), never reached it.
func TestCache_InvalidNameAnsweredByNoCopy(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var changes []string
	b := setupCache(t, time.Second, CacheConfig{OnChange: func(name, key string) {
		mu.Lock()
		changes = append(changes, name+"/"+key)
		mu.Unlock()
	}})
	ctx := t.Context()
	rev, err := b.other.Set(ctx, "rates", "x.y", json.RawMessage(`1`))
	require.NoError(t, err)
	b.seen(t, rev)
	_, _, err = b.cache.Get(ctx, "rates", "x.y")
	require.NoError(t, err)

	_, _, err = b.other.Get(ctx, "rates.x", "y")
	require.ErrorIs(t, err, ErrInvalid, "the service refuses the name")
	v, _, _, ok := b.cache.Peek("rates.x", "y")
	require.False(t, ok, "Peek answered the invalid name rates.x with the copy of rates/x.y (%s); its changes are told as rates/x.y only", v)
}
