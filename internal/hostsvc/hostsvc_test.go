package hostsvc

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 10 * time.Second

type bundle struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue // the cancels
	states jetstream.KeyValue
	dead   jetstream.KeyValue
	sp     subject.Space
	srv    *Server
}

func setup(t *testing.T, admit func(id, typ string) error) *bundle {
	t.Helper()
	return setupWith(t, func(c *Config) { c.Admit = admit })
}

// setupWith is setup with a Config that with has set.
func setupWith(t *testing.T, with func(*Config)) *bundle {
	t.Helper()
	ns := natstest.Server(t)
	b := &bundle{nc: natstest.Conn(t, ns)}
	b.sp, _ = subject.New("default")
	var err error
	b.js, err = jetstream.New(b.nc)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = b.js.CreateStream(ctx, jetstream.StreamConfig{Name: b.sp.JobStream(), Subjects: b.sp.JobSubjects(), Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	b.kv, err = b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b.sp.CancelBucket(), TTL: time.Hour})
	require.NoError(t, err)
	b.states, err = b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b.sp.StateBucket(), LimitMarkerTTL: time.Second})
	require.NoError(t, err)
	b.dead, err = b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b.sp.DeadBucket()})
	require.NoError(t, err)
	cfg := Config{Conn: b.nc, JS: b.js, Space: b.sp, Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
	with(&cfg)
	b.srv = NewServer(cfg)
	require.NoError(t, b.srv.Start(ctx))
	t.Cleanup(b.srv.Stop)
	require.Eventually(t, func() bool {
		_, ok := b.srv.feed.page(0)
		return ok
	}, waitLimit, 5*time.Millisecond, "the feed has read the bucket")
	return b
}

// recorder is a Cancels that keeps what Follow tells.
type recorder struct {
	mu     sync.Mutex
	ids    map[string]int // id -> times told
	loaded int
}

func (r *recorder) Cancelled(id string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[string]int{}
	}
	r.ids[id]++
}

func (r *recorder) Loaded() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loaded++
}

func (r *recorder) has(ids ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.ids[id] == 0 {
			return false
		}
	}
	return true
}

func (r *recorder) loads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loaded
}

// follow runs Follow on c into a recorder until the test ends.
func follow(t *testing.T, c *Caller, check time.Duration) *recorder {
	t.Helper()
	r := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Follow(ctx, r, check) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return r
}

// lose holds id as conductord's feed does, but publishes nothing: a lost
// feed message.
func (b *bundle) lose(id string) {
	f := b.srv.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	f.index[id] = f.seq
	f.held = append(f.held, heldID{seq: f.seq, id: id, at: time.Now()})
	f.pages = nil
}

func (b *bundle) cancel(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		_, err := b.kv.Put(context.Background(), id, []byte("{}"))
		require.NoError(t, err)
	}
}

// TestFollow_HeldThenNew: the ids cancelled before Follow began, more
// than a page of them, then each new one, are all recorded, and Loaded
// comes once the first ones are.
func TestFollow_HeldThenNew(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var before []string
	for i := range pageIDs + 500 {
		before = append(before, "old-"+strconv.Itoa(i))
	}
	b.cancel(t, before...)
	require.Eventually(t, func() bool {
		p, ok := b.srv.feed.page(0)
		return ok && p.More
	}, waitLimit, 5*time.Millisecond, "the feed holds more than a page")
	r := follow(t, NewCaller(b.nc, b.sp), time.Hour)
	require.Eventually(t, func() bool { return r.loads() == 1 }, waitLimit, 5*time.Millisecond)
	require.True(t, r.has(before...), "every id held is recorded before Loaded")
	b.cancel(t, "new-1", "new-2")
	require.Eventually(t, func() bool { return r.has("new-1", "new-2") }, waitLimit, 5*time.Millisecond)
	require.Equal(t, 1, r.loads(), "no gap: read once")
}

// TestFollow_GapReadsAgain: an id the host missed on the feed (here,
// published while its subscription was away: as after a slow consumer's
// drop) is found by the next one's number, and read with a page.
func TestFollow_GapReadsAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	r := follow(t, NewCaller(b.nc, b.sp), time.Hour)
	require.Eventually(t, func() bool { return r.loads() == 1 }, waitLimit, 5*time.Millisecond)
	// Held by conductord without a feed message: a lost one.
	b.lose("lost")
	b.cancel(t, "next")
	require.Eventually(t, func() bool { return r.has("lost", "next") }, waitLimit, 5*time.Millisecond, "the gap is read again")
	require.Equal(t, 2, r.loads())
}

// TestFollow_CheckFindsMissed: a lost id with no other after it is found
// by the periodic check.
func TestFollow_CheckFindsMissed(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	r := follow(t, NewCaller(b.nc, b.sp), 50*time.Millisecond)
	require.Eventually(t, func() bool { return r.loads() == 1 }, waitLimit, 5*time.Millisecond)
	b.lose("lost")
	require.Eventually(t, func() bool { return r.has("lost") }, waitLimit, 5*time.Millisecond, "the check finds it")
}

// TestFollow_NewEpochReadsAgain: a conductord that begins again (a new
// epoch, its numbers from 1) is read again, not taken for the old one.
func TestFollow_NewEpochReadsAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.cancel(t, "a", "b", "c")
	r := follow(t, NewCaller(b.nc, b.sp), time.Hour)
	require.Eventually(t, func() bool { return r.loads() == 1 && r.has("a", "b", "c") }, waitLimit, 5*time.Millisecond)
	b.srv.feed.begin(time.Hour) // a restart: its numbers start again
	b.srv.feed.mu.Lock()
	b.srv.feed.loaded = true
	b.srv.feed.mu.Unlock()
	b.cancel(t, "d")
	require.Eventually(t, func() bool { return r.has("d") && r.loads() == 2 }, waitLimit, 5*time.Millisecond)
}

// TestConsumers: a request makes the three consumers of its type, with
// the ack wait asked held to its bounds; Admit's refusals answer 403 or
// 400 with the reason and make nothing.
func TestConsumers(t *testing.T) {
	t.Parallel()
	b := setup(t, func(id, typ string) error {
		switch typ {
		case "theirs":
			return ErrForbidden
		case "toomany":
			return context.DeadlineExceeded
		}
		return nil
	})
	c := NewCaller(b.nc, b.sp)
	ctx := context.Background()
	require.NoError(t, c.Consumers(ctx, "sq", 300*time.Millisecond))
	cons, err := b.js.Consumer(ctx, b.sp.JobStream(), b.sp.Consumer("sq"))
	require.NoError(t, err)
	cfg := cons.CachedInfo().Config
	require.Equal(t, b.sp.Job("sq"), cfg.FilterSubject)
	require.Equal(t, wire.MinAckWait, cfg.AckWait, "held to its least")
	for _, p := range []wire.Priority{wire.PriorityHigh, wire.PriorityLow} {
		_, err := b.js.Consumer(ctx, b.sp.JobStream(), b.sp.ConsumerAt("sq", string(p)))
		require.ErrorIs(t, err, jetstream.ErrConsumerNotFound, "%s: none of its jobs queued", p)
	}
	// A host from before consumers came with their jobs does not say it
	// asks for a missing one on its own: it gets all three.
	m, err := b.nc.Request(b.sp.ConsumersOf("old"), []byte(`{"ack_wait":30000000000}`), waitLimit)
	require.NoError(t, err)
	require.Equal(t, "200", m.Header.Get(names.HeaderStatus), string(m.Data))
	for _, p := range wire.Priorities {
		_, err := b.js.Consumer(ctx, b.sp.JobStream(), b.sp.ConsumerAt("old", string(p)))
		require.NoError(t, err, "%s made for a host from before", p)
	}
	require.ErrorContains(t, c.Consumers(ctx, "theirs", 0), "(403)")
	require.ErrorContains(t, c.Consumers(ctx, "toomany", 0), "(400)")
	_, err = b.js.Consumer(ctx, b.sp.JobStream(), b.sp.Consumer("theirs"))
	require.ErrorIs(t, err, jetstream.ErrConsumerNotFound)

	// Bad input: a body that is not JSON; a reply subject that is no
	// inbox gets nothing.
	m, err = b.nc.Request(b.sp.ConsumersOf("sq"), []byte("{"), waitLimit)
	require.NoError(t, err)
	require.Equal(t, "400", m.Header.Get(names.HeaderStatus))
	var e map[string]string
	require.NoError(t, json.Unmarshal(m.Data, &e))
	require.Contains(t, e["error"], "not a consumers request")
	sub, err := b.nc.SubscribeSync("elsewhere")
	require.NoError(t, err)
	require.NoError(t, b.nc.PublishRequest(b.sp.ConsumersOf("sq"), "elsewhere", nil))
	require.NoError(t, b.nc.PublishRequest(b.sp.CancelsOf(), "elsewhere", nil))
	_, err = b.nc.Request(b.sp.CancelsOf(), nil, waitLimit) // after the two: served in order
	require.NoError(t, err)
	_, err = sub.NextMsg(100 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "no answer outside an inbox")
}

// TestConsumers_PrioritiesAsTheirJobsCome: a type's high and low
// consumers are made with its normal one when their jobs are queued
// already, or by MakePriority once they come, as the normal one is (its
// ack wait); a type no host serves (no normal consumer) gets none.
func TestConsumers_PrioritiesAsTheirJobsCome(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	exists := func(typ string, p wire.Priority) bool {
		_, err := b.js.Consumer(ctx, b.sp.JobStream(), b.sp.ConsumerAt(typ, string(p)))
		if err != nil {
			require.ErrorIs(t, err, jetstream.ErrConsumerNotFound)
		}
		return err == nil
	}

	// Low jobs queued before the pool starts: made with the normal one.
	_, err := b.js.Publish(ctx, b.sp.JobAt("sq", "low"), []byte("1"))
	require.NoError(t, err)
	require.NoError(t, MakeConsumers(ctx, b.js, b.sp, "sq", 45*time.Second))
	require.True(t, exists("sq", wire.PriorityNormal))
	require.True(t, exists("sq", wire.PriorityLow), "its jobs were queued")
	require.False(t, exists("sq", wire.PriorityHigh), "none of its jobs queued")

	// A high job comes: MakePriority makes its consumer as the normal one.
	ok, err := MakePriority(ctx, b.js, b.sp, "sq", wire.PriorityHigh)
	require.NoError(t, err)
	require.True(t, ok)
	cons, err := b.js.Consumer(ctx, b.sp.JobStream(), b.sp.ConsumerAt("sq", "high"))
	require.NoError(t, err)
	require.Equal(t, b.sp.JobAt("sq", "high"), cons.CachedInfo().Config.FilterSubject)
	require.Equal(t, 45*time.Second, cons.CachedInfo().Config.AckWait)
	ok, err = MakePriority(ctx, b.js, b.sp, "sq", wire.PriorityHigh)
	require.NoError(t, err)
	require.True(t, ok, "made already")

	// A host asking for more raises the ack wait of all three.
	require.NoError(t, MakeConsumers(ctx, b.js, b.sp, "sq", time.Minute))
	for _, p := range wire.Priorities {
		c, err := b.js.Consumer(ctx, b.sp.JobStream(), b.sp.ConsumerAt("sq", string(p)))
		require.NoError(t, err)
		require.Equal(t, time.Minute, c.CachedInfo().Config.AckWait, p)
	}

	// No host serves "gone": nothing is made.
	ok, err = MakePriority(ctx, b.js, b.sp, "gone", wire.PriorityHigh)
	require.NoError(t, err)
	require.False(t, ok)
	require.False(t, exists("gone", wire.PriorityHigh))
}

// TestFeed_PutAgainHeldOnce: an id put again and again (a client
// cancelling in a loop) is paged once, and what conductord holds stays
// within twice the ids plus the slack of the compaction.
func TestFeed_PutAgainHeldOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const puts = 5000
	for range puts {
		_, err := b.kv.Put(context.Background(), "same-job", []byte("{}"))
		require.NoError(t, err)
	}
	b.cancel(t, "end")
	var p wire.CancelsPage
	require.Eventually(t, func() bool {
		p, _ = b.srv.feed.page(0)
		return slices.Contains(p.IDs, "end")
	}, waitLimit, 5*time.Millisecond)
	require.ElementsMatch(t, []string{"same-job", "end"}, p.IDs, "each id once")
	b.srv.feed.mu.Lock()
	held := len(b.srv.feed.held)
	b.srv.feed.mu.Unlock()
	require.Less(t, held, 2*2+1024+2, "held: %d entries for 2 ids after %d puts", held, puts)
}
