package client

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
)

// Found by an outside review: Stats documents that "a roll-up the caller has not taken
// when the next comes is dropped: the next has the counters too", but it
// drops the next and keeps the one not taken: a caller that was slow
// for one interval reads a stale roll-up (and the newest is lost).
func TestStats_TheNewestReplacesOneNotTaken(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: mustSpace(t).StateBucket()})
	require.NoError(t, err)
	c, err := New(nc, Config{RecheckInterval: time.Hour})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	taken := make(chan struct{}, 2)
	c.onStatsTaken = func() { taken <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := c.Stats(ctx)
	require.NoError(t, err)
	space := mustSpace(t)
	t1 := time.Date(2026, 12, 5, 0, 0, 5, 0, time.UTC)
	for i := range 2 {
		data, err := json.Marshal(Stats{At: t1.Add(time.Duration(i) * 5 * time.Second)})
		require.NoError(t, err)
		require.NoError(t, nc.Publish(space.StatsEvent(), data))
	}
	require.NoError(t, nc.Flush())
	for range 2 { // the caller is slow: both have come
		select {
		case <-taken:
		case <-time.After(5 * time.Second):
			t.Fatal("the roll-ups were not taken")
		}
	}
	select {
	case st := <-ch:
		require.Equal(t, t1.Add(5*time.Second), st.At.UTC(), "the caller got the stale roll-up")
	case <-time.After(5 * time.Second):
		t.Fatal("no roll-up")
	}
}

func mustSpace(t *testing.T) subject.Space {
	t.Helper()
	space, err := subject.New("default")
	require.NoError(t, err)
	return space
}
