package worker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/worker"
)

// A handler's lookups go to workerd as lookup ops, each numbered, and
// come back by the reply of the same number: in any order, with jobs
// and cancels of other jobs in between.
func TestLookup_RequestsAndReplies(t *testing.T) {
	t.Parallel()
	type got struct {
		rate float64
		keys []string
		err  error
	}
	results := make(chan got, 1)
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		var g got
		g.err = job.Lookup(ctx, "rates", "usd", &g.rate)
		if g.err == nil {
			g.err = job.SetLookup(ctx, "rates", "eur", 0.9)
		}
		if g.err == nil {
			g.keys, g.err = job.LookupKeys(ctx, "rates")
		}
		if g.err == nil {
			g.err = job.DeleteLookup(ctx, "rates", "gbp")
		}
		results <- g
		return g.rate, g.err
	}, worker.WithPrefetch(1))
	b.sendJob(t, "j1", "convert", "1")

	get := b.recv(t)
	require.Equal(t, proto.Message{Op: proto.OpLookup, Req: get.Req, Do: "get", Name: "rates", Key: "usd"}, get)
	require.NotZero(t, get.Req)
	// A job queued behind, and a reply to no request, come first.
	b.sendJob(t, "j2", "convert", "2")
	b.send(t, `{"op":"reply","req":999,"value":1}`)
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,"value":1.25,"rev":4}`, get.Req))

	set := b.recv(t)
	require.Equal(t, proto.Message{Op: proto.OpLookup, Req: set.Req, Do: "set", Name: "rates", Key: "eur", Value: []byte("0.9")}, set)
	require.NotEqual(t, get.Req, set.Req)
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,"rev":5}`, set.Req))

	keys := b.recv(t)
	require.Equal(t, "keys", keys.Do)
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,"keys":["eur","usd"]}`, keys.Req))

	del := b.recv(t)
	require.Equal(t, proto.Message{Op: proto.OpLookup, Req: del.Req, Do: "del", Name: "rates", Key: "gbp"}, del)
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d}`, del.Req))

	g := <-results
	require.NoError(t, g.err)
	require.Equal(t, 1.25, g.rate)
	require.Equal(t, []string{"eur", "usd"}, g.keys)
	done := b.recv(t)
	require.Equal(t, proto.OpDone, done.Op)
	require.Equal(t, "j1", done.ID)
	require.JSONEq(t, "1.25", string(done.Result))
}

// An error reply is a *LookupError; a 404 matches ErrNoKey.
func TestLookup_ErrorReplies(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 2)
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		var v any
		errs <- job.Lookup(ctx, "rates", "xyz", &v)
		errs <- job.SetLookup(ctx, "rates", "", 1)
		return nil, nil
	})
	b.sendJob(t, "j1", "convert", "1")
	m := b.recv(t)
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,"error":"no such key","code":404}`, m.Req))
	err := <-errs
	require.ErrorIs(t, err, worker.ErrNoKey)
	require.EqualError(t, err, "worker: lookup get rates/xyz: no such key (404)")

	m = b.recv(t)
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,"error":"an empty key","code":400}`, m.Req))
	err = <-errs
	require.NotErrorIs(t, err, worker.ErrNoKey)
	le, ok := errors.AsType[*worker.LookupError](err)
	require.True(t, ok, "%T", err)
	require.Equal(t, 400, le.Code)
	require.Equal(t, proto.OpDone, b.recv(t).Op)
}

// A lookup waits for its context, and for workerd: one whose context
// ends returns its cause (its late reply is dropped); one pending when
// workerd closes the channel returns ErrChannelClosed.
func TestLookup_ContextAndChannelEnd(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 1)
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		var v any
		err := job.Lookup(short, "rates", "usd", &v)
		errs <- err
		errs <- job.Lookup(ctx, "rates", "usd", &v)
		return nil, nil
	})
	b.sendJob(t, "j1", "convert", "1")
	first := b.recv(t)
	require.ErrorIs(t, <-errs, context.DeadlineExceeded)
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,"value":1}`, first.Req)) // late: dropped
	second := b.recv(t)
	require.Greater(t, second.Req, first.Req)
	require.NoError(t, b.in.Close())
	require.ErrorIs(t, <-errs, worker.ErrChannelClosed)
	require.ErrorIs(t, b.wait(t), worker.ErrChannelClosed)
}

// A Job made by hand (a handler's unit test) has no workerd to ask.
func TestLookup_JobByHand(t *testing.T) {
	t.Parallel()
	j := &worker.Job{ID: "j1"}
	var v any
	require.ErrorContains(t, j.Lookup(context.Background(), "rates", "usd", &v), "not handed out by Run")
}

// An answer workerd marks keep is kept: later Lookups of its key are
// answered in the worker, with no request, a 404 too, until a drop op
// names the key (or none); the worker's own write of a key drops its
// copy.
func TestLookup_KeptUntilDropped(t *testing.T) {
	t.Parallel()
	type step struct {
		do, key string
	}
	var steps = map[string][]step{
		"j1": {{"get", "usd"}, {"get", "usd"}, {"get", "gbp"}, {"get", "gbp"}},
		"j2": {{"get", "usd"}, {"get", "gbp"}},
		"j3": {{"get", "usd"}, {"set", "usd"}, {"get", "usd"}, {"get", "gbp"}},
		"j4": {{"get", "usd"}, {"get", "gbp"}},
	}
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		var got []any
		for _, s := range steps[job.ID] {
			var v any
			var err error
			if s.do == "set" {
				err = job.SetLookup(ctx, "rates", s.key, 2)
			} else {
				err = job.Lookup(ctx, "rates", s.key, &v)
			}
			if errors.Is(err, worker.ErrNoKey) {
				v, err = "none", nil
			}
			if err != nil {
				return nil, err
			}
			got = append(got, v)
		}
		return got, nil
	}, worker.WithPrefetch(0), worker.WithLookupCache(8))
	// lookup answers the next message, a lookup of key, with reply.
	lookup := func(do, key, reply string) {
		t.Helper()
		m := b.recv(t)
		require.Equal(t, proto.OpLookup, m.Op, "%+v", m)
		require.Equal(t, do, m.Do)
		require.Equal(t, key, m.Key)
		b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,%s}`, m.Req, reply))
	}
	done := func(id, result string) {
		t.Helper()
		m := b.recv(t)
		require.Equal(t, proto.OpDone, m.Op, "%+v", m)
		require.Equal(t, id, m.ID)
		require.JSONEq(t, result, string(m.Result))
	}

	b.sendJob(t, "j1", "t", "1")
	lookup("get", "usd", `"value":1,"rev":3,"keep":true`)
	lookup("get", "gbp", `"error":"no such key","code":404,"keep":true`)
	done("j1", `[1,1,"none","none"]`) // the second of each kept

	b.send(t, `{"op":"drop","name":"rates","key":"usd"}`)
	b.sendJob(t, "j2", "t", "1")
	lookup("get", "usd", `"value":1.5,"rev":4`) // not marked keep
	done("j2", `[1.5,"none"]`)

	b.sendJob(t, "j3", "t", "1")
	lookup("get", "usd", `"value":1.6,"rev":5,"keep":true`)
	lookup("set", "usd", `"rev":6`)
	lookup("get", "usd", `"value":2,"rev":6,"keep":true`) // its own write dropped the copy
	done("j3", `[1.6,null,2,"none"]`)

	b.send(t, `{"op":"drop"}`)
	b.sendJob(t, "j4", "t", "1")
	lookup("get", "usd", `"value":3,"rev":7`)
	lookup("get", "gbp", `"value":4,"rev":8`)
	done("j4", `[3,4]`)
}
