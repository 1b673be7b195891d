package client

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
)

// TestPassComplete checks the decision a listing makes when the store
// sends nothing for a while: complete if nothing was written past what it
// read (the values it waited for expired), else ErrIncomplete, never a
// partial page.
func TestPassComplete(t *testing.T) {
	ns := natstest.Server(t)
	js, err := jetstream.New(natstest.Conn(t, ns))
	require.NoError(t, err)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "states"})
	require.NoError(t, err)
	c := &Client{js: js}
	require.NoError(t, c.passComplete(ctx, "states", nil), "an empty bucket")

	_, err = kv.PutString(ctx, "a", "{}")
	require.NoError(t, err)
	_, err = kv.PutString(ctx, "b", "{}")
	require.NoError(t, err)
	a, err := kv.Get(ctx, "a")
	require.NoError(t, err)
	b, err := kv.Get(ctx, "b")
	require.NoError(t, err)
	require.ErrorIs(t, c.passComplete(ctx, "states", nil), ErrIncomplete, "nothing read")
	require.ErrorIs(t, c.passComplete(ctx, "states", a), ErrIncomplete, "b not read")
	require.NoError(t, c.passComplete(ctx, "states", b))
}
