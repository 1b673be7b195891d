package agent

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
)

func TestStoreError(t *testing.T) {
	status := func(code, desc string) *nats.Msg {
		m := nats.NewMsg("x")
		m.Header.Set("Status", code)
		m.Header.Set("Description", desc)
		return m
	}
	for _, tc := range []struct {
		name string
		m    *nats.Msg
		want string // "" : stored
	}{
		{"stored", &nats.Msg{Data: []byte(`{"stream":"KV_jobs","seq":12}`)}, ""},
		{"stored, more fields", &nats.Msg{Data: []byte(`{"stream":"KV_jobs","domain":"hub","seq":12,"duplicate":true}`)}, ""},
		{"stored, other order", &nats.Msg{Data: []byte(`{"seq":12,"stream":"KV_jobs"}`)}, ""},
		{"error", &nats.Msg{Data: []byte(`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`)}, "store: maximum messages exceeded (status 503, error code 10077)"},
		{"error after stream", &nats.Msg{Data: []byte(`{"stream":"KV_jobs","error":{"code":400,"err_code":1,"description":"bad"}}`)}, "store: bad (status 400, error code 1)"},
		{"no stream", &nats.Msg{Data: []byte(`{"seq":12}`)}, `store: answer names no stream: "{\"seq\":12}"`},
		{"garbage", &nats.Msg{Data: []byte(`not json`)}, `store: unreadable answer "not json": invalid character 'o' in literal null (expecting 'u')`},
		{"no responders", status("503", ""), "store: no responders: is the state bucket there?"},
		{"other status", status("408", "Request Timeout"), "store: status 408 Request Timeout"},
		{"empty", &nats.Msg{}, "store: empty answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := storeError(tc.m)
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tc.want)
		})
	}
}

// TestStoreAnswers stores bursts of states in a real bucket and checks
// that each wait reports each state's own outcome.
func TestStoreAnswers(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "states"})
	require.NoError(t, err)
	a, err := newStoreAnswers(nc)
	require.NoError(t, err)
	defer a.close()

	for round := range 3 {
		b := a.burst()
		var sent []*stateStore
		for i := range 50 {
			sent = append(sent, a.send(b, "$KV.states.k"+strconv.Itoa(round*100+i), []byte(strconv.Itoa(i)), 0, 0, 0))
		}
		// No stream takes this subject: the server says so at once.
		lost := a.send(b, "nowhere.at.all", []byte("x"), 0, 0, 0)
		// A key written already, expected to have none: a conflict.
		stale := a.send(b, "$KV.states.k"+strconv.Itoa(round*100), []byte("late"), 0, 0, 0)
		a.seal(b)
		for _, st := range sent {
			require.NoError(t, a.wait(st, func() {}))
		}
		require.ErrorContains(t, a.wait(lost, func() {}), "no responders")
		err := a.wait(stale, func() {})
		require.ErrorIs(t, err, errWrongLast)
		require.True(t, isConflict(err))
	}
	e, err := kv.Get(ctx, "k249")
	require.NoError(t, err)
	assert.Equal(t, "49", string(e.Value()))
	a.mu.Lock()
	assert.Empty(t, a.open, "every answered state is forgotten")
	a.mu.Unlock()
}

// TestStoreAnswers_NoAnswer checks the waits on states the store is slow
// to answer: an answer wakes the wait on its own state while the rest of
// the burst is still unanswered; at the burst's deadline the states still
// unanswered are given up together, and a late answer changes nothing.
func TestStoreAnswers_NoAnswer(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	a, err := newStoreAnswers(nc)
	require.NoError(t, err)
	defer a.close()

	// A subscriber that keeps the states and answers none itself.
	held := make(chan *nats.Msg, 10)
	sub, err := nc.Subscribe("silent.>", func(m *nats.Msg) { held <- m })
	require.NoError(t, err)
	defer sub.Unsubscribe()
	take := func() *nats.Msg {
		select {
		case m := <-held:
			return m
		case <-time.After(waitLimit):
			t.Fatal("no state reached the subscriber")
			return nil
		}
	}
	stored := []byte(`{"stream":"KV_states","seq":9}`)

	a.timeout = time.Hour
	b := a.burst()
	first, second := a.send(b, "silent.1", []byte("1"), 0, 0, 0), a.send(b, "silent.2", []byte("2"), 0, 0, 0)
	a.seal(b)
	waited := make(chan error, 1)
	go func() { waited <- a.wait(first, func() {}) }()
	require.NoError(t, take().Respond(stored))
	select {
	case err := <-waited:
		require.NoError(t, err)
	case <-time.After(waitLimit):
		t.Fatal("the answer to the state waited on did not end the wait")
	}
	answered, _ := a.result(second)
	assert.False(t, answered)
	take() // second's, never answered

	a.timeout = 2 * time.Second
	b = a.burst()
	third, fourth := a.send(b, "silent.3", []byte("3"), 0, 0, 0), a.send(b, "silent.4", []byte("4"), 0, 0, 0)
	sealed := time.Now()
	a.seal(b)
	var slow atomic.Int32
	err = a.wait(third, func() { slow.Add(1) })
	require.ErrorIs(t, err, errNoAnswer)
	assert.GreaterOrEqual(t, time.Since(sealed), a.timeout, "waits for the deadline")
	assert.Equal(t, int32(1), slow.Load(), "slow is called once")
	// The rest of the burst was given up with it: no second wait.
	require.ErrorIs(t, a.wait(fourth, func() { t.Error("slow called for a settled state") }), errNoAnswer)

	// A late answer changes nothing.
	require.NoError(t, take().Respond(stored))
	require.NoError(t, nc.Flush())
	answered, err = a.result(third)
	assert.True(t, answered)
	assert.ErrorIs(t, err, errNoAnswer)
}

// TestStoreAnswers_SendFails settles a state at once when it cannot be
// sent.
func TestStoreAnswers_SendFails(t *testing.T) {
	ns := natstest.Server(t)
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	a, err := newStoreAnswers(nc)
	require.NoError(t, err)
	nc.Close()
	b := a.burst()
	st := a.send(b, "$KV.states.k", []byte("1"), 0, 0, 0)
	a.seal(b)
	answered, err := a.result(st)
	require.True(t, answered, "a state that could not be sent has its outcome")
	require.True(t, errors.Is(err, nats.ErrConnectionClosed))
	require.True(t, errors.Is(a.wait(st, func() { t.Error("slow called") }), nats.ErrConnectionClosed))
}
