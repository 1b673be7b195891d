package lookup

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
)

const prefix = "conductor.default.lookup"

func serve(t *testing.T) (*Client, *nats.Conn, micro.Service) {
	t.Helper()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	store, err := Open(t.Context(), js, Config{Bucket: "conductor-default-lookups", MaxKeys: 3})
	require.NoError(t, err)
	svc, err := Serve(nc, store, prefix)
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	return NewClient(natstest.Conn(t, ns), prefix), nc, svc
}

// TestService: a client on another connection gets, sets, deletes and
// lists through the service; the store's errors come back as the same
// errors; the service is a micro service, discoverable, with stats.
func TestService(t *testing.T) {
	t.Parallel()
	c, _, svc := serve(t)
	ctx := t.Context()
	rev, err := c.Set(ctx, "prices", "sku 42", json.RawMessage(`{ "eur": 12.5 }`))
	require.NoError(t, err)
	v, got, err := c.Get(ctx, "prices", "sku 42")
	require.NoError(t, err)
	assert.Equal(t, `{"eur":12.5}`, string(v))
	assert.Equal(t, rev, got)
	keys, err := c.Keys(ctx, "prices")
	require.NoError(t, err)
	assert.Equal(t, []string{"sku 42"}, keys)
	keys, err = c.Keys(ctx, "empty")
	require.NoError(t, err)
	assert.Empty(t, keys)
	require.NoError(t, c.Delete(ctx, "prices", "sku 42"))
	_, _, err = c.Get(ctx, "prices", "sku 42")
	require.ErrorIs(t, err, ErrNotFound)

	_, err = c.Set(ctx, "prices", "k", json.RawMessage(`{`))
	require.ErrorIs(t, err, ErrInvalid)
	_, err = c.Set(ctx, "bad name", "k", json.RawMessage(`1`))
	require.ErrorIs(t, err, ErrInvalid, "refused before asking")
	for i := range 4 {
		_, err := c.Set(ctx, "big", strings.Repeat("k", i+1), json.RawMessage(`1`))
		require.NoError(t, err)
	}
	_, err = c.Keys(ctx, "big")
	require.ErrorIs(t, err, ErrTooMany)

	info := svc.Info()
	assert.Equal(t, ServiceName, info.Name)
	assert.Len(t, info.Endpoints, 4)
	var requests int
	for _, e := range svc.Stats().Endpoints {
		requests += e.NumRequests
	}
	assert.Positive(t, requests)
}

// TestService_BadRequests: a body that is not a request is answered 400;
// a request whose reply subject is not an inbox is not served at all, so
// no caller aims the service's answer at a subject of its choosing.
func TestService_BadRequests(t *testing.T) {
	t.Parallel()
	c, nc, _ := serve(t)
	m, err := nc.Request(prefix+".get", []byte(`not json`), 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "400", m.Header.Get(micro.ErrorCodeHeader))

	aimed, err := nc.SubscribeSync("conductor.default.control.victim")
	require.NoError(t, err)
	require.NoError(t, nc.PublishRequest(prefix+".set", "conductor.default.control.victim", []byte(`{"name":"n","key":"k1","value":1}`)))
	// A set answered after it, on the same endpoint, is served after it.
	_, err = c.Set(t.Context(), "n", "k2", json.RawMessage(`2`))
	require.NoError(t, err)
	_, _, err = c.Get(t.Context(), "n", "k1")
	require.ErrorIs(t, err, ErrNotFound, "a request with a reply subject that is no inbox is not served")
	assert.Equal(t, `lookup: not found: n/"k1"`, err.Error(), "the store's error as it gave it")
	require.NoError(t, nc.Flush())
	_, err = aimed.NextMsg(100 * time.Millisecond) // nothing to wait for: a short look
	require.ErrorIs(t, err, nats.ErrTimeout, "an answer went to the subject the caller named")
}

// TestService_FloodBounded: a caller that floods the service with
// requests holds at most an endpoint's pending bound in it: past it the
// server drops requests for the service (a slow consumer, reported on its
// connection) rather than conductord buffering them, and a request of
// another endpoint is answered meanwhile.
func TestService_FloodBounded(t *testing.T) {
	t.Parallel()
	c, nc, _ := serve(t)
	var mu sync.Mutex
	dropped := false
	nc.SetErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) && sub != nil && sub.Subject == prefix+".set" {
			mu.Lock()
			dropped = true
			mu.Unlock()
		}
	})
	flood, err := nats.Connect(nc.ConnectedUrl())
	require.NoError(t, err)
	t.Cleanup(flood.Close)
	inbox := flood.NewInbox()
	body := []byte(`{"name":"n","key":"k","value":"` + strings.Repeat("v", 1000) + `"}`)
	for range 3 * maxPending {
		require.NoError(t, flood.PublishRequest(prefix+".set", inbox, body))
	}
	require.NoError(t, flood.Flush())
	_, err = c.Keys(t.Context(), "n")
	require.NoError(t, err, "another endpoint answers during the flood")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return dropped
	}, 30*time.Second, 10*time.Millisecond, "the flood was held past the pending bound")
}

// TestService_CallersRated: on the subjects that name their caller
// (WithCallers), a caller past its rate is answered 429 at once, and
// another caller is served as before.
func TestService_CallersRated(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	store, err := Open(t.Context(), js, Config{Bucket: "conductor-default-lookups"})
	require.NoError(t, err)
	svc, err := Serve(nc, store, prefix, WithCallers("conductor.default.as.*.lookup", 10))
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	assert.Len(t, svc.Info().Endpoints, 8)

	h1 := NewClient(natstest.Conn(t, ns), "conductor.default.as.h1.lookup")
	h2 := NewClient(natstest.Conn(t, ns), "conductor.default.as.h2.lookup")
	_, err = h1.Set(t.Context(), "n", "k", json.RawMessage(`1`))
	require.NoError(t, err)
	refused := 0
	for range 30 {
		_, _, err := h1.Get(t.Context(), "n", "k")
		if err != nil {
			require.ErrorIs(t, err, ErrBusy)
			require.Equal(t, 429, Code(err))
			refused++
		}
	}
	assert.GreaterOrEqual(t, refused, 15, "h1 past its 10 a second")
	v, _, err := h2.Get(t.Context(), "n", "k")
	require.NoError(t, err, "another caller is served")
	assert.Equal(t, `1`, string(v))
}
