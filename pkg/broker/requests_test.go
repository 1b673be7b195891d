package broker_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/broker"
)

// replies runs a job of the ask worker sending n lookups, and returns
// the replies it got, by req.
func askJob(t *testing.T, b *testBundle, n int) map[uint64]proto.Message {
	t.Helper()
	b.submit(t, "j"+strconv.Itoa(n), strconv.Itoa(n))
	e := b.outcome(t)
	require.Empty(t, e.out.Err)
	var replies []proto.Message
	require.NoError(t, json.Unmarshal(e.out.Result, &replies))
	byReq := map[uint64]proto.Message{}
	for _, r := range replies {
		require.NotContains(t, byReq, r.Req, "req %d answered twice", r.Req)
		byReq[r.Req] = r
	}
	require.Len(t, byReq, n)
	return byReq
}

// A pool without OnRequest answers every request with an error, and
// serves on.
func TestRequests_NoHandler(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	setup(t, b.spec("ask"), b)
	r := askJob(t, b, 2)
	require.Equal(t, 501, r[1].Code)
	require.Equal(t, "this pool takes no requests", r[2].Error)
}

// OnRequest's answers, given at once or later from another goroutine,
// each reach the request they answer; past 64 in flight a worker's
// requests are answered 429 at once; a second answer is dropped.
func TestRequests_AnsweredInAnyOrder(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	held := make(chan func(broker.Reply), 128)
	var mu sync.Mutex
	var asked []broker.Request
	cfg := b.config(b.spec("ask"))
	cfg.OnRequest = func(r broker.Request, answer func(broker.Reply)) {
		mu.Lock()
		asked = append(asked, r)
		mu.Unlock()
		if r.Key == "k1" {
			answer(broker.Reply{Value: json.RawMessage(`"at once"`), Rev: 1})
			answer(broker.Reply{Value: json.RawMessage(`"again"`)}) // dropped
			return
		}
		held <- answer
	}
	replied := make(chan struct{}, 128) // a reply the worker got
	cfg.OnEvent = func(e broker.Event) {
		if e.Kind == broker.EventWorkerMessage {
			replied <- struct{}{}
		}
	}
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(t.Context()))
	t.Cleanup(pool.Stop)

	const n = 70
	go func() {
		// Once the worker has its answer to k1 and the five past 64 in
		// flight, answer the held ones, the last first.
		var answers []func(broker.Reply)
		for len(answers) < 64 {
			answers = append(answers, <-held)
		}
		for range 6 {
			<-replied
		}
		for i := len(answers) - 1; i >= 0; i-- {
			answers[i](broker.Reply{Value: json.RawMessage(strconv.Itoa(i))})
		}
	}()
	r := askJob(t, b, n)
	require.Equal(t, `"at once"`, string(r[1].Value))
	require.Equal(t, uint64(1), r[1].Rev)
	busy := 0
	for req := uint64(2); req <= n; req++ {
		if r[req].Code == 429 {
			busy++
			require.Contains(t, r[req].Error, "too many requests in flight")
			continue
		}
		require.Empty(t, r[req].Error, "req %d", req)
		require.NotEmpty(t, r[req].Value, "req %d", req)
	}
	// k1 was answered before the next came: 64 held, the rest busy.
	require.Equal(t, n-65, busy, "past 64 in flight")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, asked, 65)
	require.Equal(t, broker.Request{Index: 0, PID: asked[0].PID, Kind: "lookup", Do: "get", Name: "rates", Key: "k1"}, asked[0])
}

// An answer that comes after the worker is gone is dropped: the pool
// stops, and the late answer returns at once.
func TestRequests_AnswerAfterTheWorkerIsGone(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	held := make(chan func(broker.Reply), 1)
	cfg := b.config(b.spec("ask"))
	cfg.OnRequest = func(_ broker.Request, answer func(broker.Reply)) { held <- answer }
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(t.Context()))
	b.submit(t, "j1", "1")
	var answer func(broker.Reply)
	select {
	case answer = <-held:
	case <-time.After(waitLimit):
		t.Fatal("no request")
	}
	pool.Kill()
	pool.Stop()
	require.True(t, b.outcome(t).out.Crashed)
	done := make(chan struct{})
	go func() {
		for i := range 2 * 64 {
			answer(broker.Reply{Value: json.RawMessage(fmt.Sprint(i))})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("a late answer blocks")
	}
}

// A get answered watched is marked keep for a worker that keeps answers;
// a change of its key, or a loss of them all, is told with a drop op
// after it, once: a key the worker does not keep is not told.
func TestRequests_KeptAnswersDropped(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	cfg := b.config(b.spec("keeper"))
	cfg.OnRequest = func(r broker.Request, answer func(broker.Reply)) {
		answer(broker.Reply{Value: json.RawMessage(`1`), Rev: 1, Watched: r.Key != "unwatched"})
	}
	told := make(chan proto.Message, 16)
	cfg.OnEvent = func(e broker.Event) {
		if e.Kind == broker.EventWorkerMessage {
			var m proto.Message
			_ = json.Unmarshal(e.Data, &m)
			told <- m
		}
	}
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(t.Context()))
	t.Cleanup(pool.Stop)
	next := func() proto.Message {
		t.Helper()
		select {
		case m := <-told:
			return m
		case <-time.After(waitLimit):
			t.Fatal("the worker was told nothing")
			return proto.Message{}
		}
	}
	job := func(key string) {
		t.Helper()
		b.submit(t, key, strconv.Quote(key))
		b.outcome(t)
	}

	job("k1")
	m := next()
	require.Equal(t, proto.OpReply, m.Op)
	require.True(t, m.Keep)
	pool.LookupChanged("rates", "k1")
	require.Equal(t, proto.Message{Op: proto.OpDrop, Name: "rates", Key: "k1"}, next())
	pool.LookupChanged("rates", "k1") // not kept any more: not told
	pool.LookupChanged("rates", "other")
	job("unwatched")
	m = next()
	require.Equal(t, proto.OpReply, m.Op)
	require.False(t, m.Keep, "an answer not watched is not kept")
	pool.LookupChanged("rates", "unwatched")
	job("k2")
	require.True(t, next().Keep)
	pool.LookupsLost()
	require.Equal(t, proto.Message{Op: proto.OpDrop}, next(), "one drop of them all")
}
