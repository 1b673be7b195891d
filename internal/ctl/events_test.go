package ctl

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// chanWriter sends every write to a channel: fmt.Fprintln writes a line at
// once.
type chanWriter chan string

func (w chanWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

func (w chanWriter) next(t *testing.T) string {
	t.Helper()
	select {
	case s := <-w:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("nothing written within 10s")
		return ""
	}
}

// follow runs conductorctl events with args until the test ends; it returns
// once the stream is open, with what conductorctl prints.
func follow(t *testing.T, b *liveBundle, args ...string) chanWriter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := make(chanWriter, 100), make(chanWriter, 100)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, append([]string{"--server", b.srv.URL, "--token", "tok", "events"}, args...), out, errOut)
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done, "an interrupt ends events cleanly")
	})
	require.Contains(t, errOut.next(t), "following the events of")
	return out
}

func (b *liveBundle) publish(t *testing.T, worker bool, e wire.Event) {
	t.Helper()
	subj := b.space.PoolEvent(e.Pool, e.Kind)
	if worker {
		subj = b.space.WorkerEvent(e.Pool, e.Kind)
	}
	data, err := json.Marshal(e)
	require.NoError(t, err)
	require.NoError(t, b.nc.Publish(subj, data))
	require.NoError(t, b.nc.Flush())
}

func TestRun_Events(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	out := follow(t, b, "--pool", "squares")
	asJSON := follow(t, b, "--json")

	b.publish(t, true, wire.Event{Time: at, Kind: "exit", Host: "a", Pool: "other", PID: 1})
	b.publish(t, true, wire.Event{
		Time: at, Kind: "exit", Host: "a", Pool: "squares", Index: 1, PID: 42,
		Reason: "failure", Exit: "exit status 2", Code: 2, Uptime: wire.Duration(3 * time.Second),
	})
	b.publish(t, false, wire.Event{
		Time: at, Kind: "failed", Host: "a", Pool: "squares", RetryAt: at.Add(time.Minute), Error: "5 exits within 1m0s",
	})
	b.publish(t, true, wire.Event{Time: at, Kind: "start", Host: "b", Pool: "squares", Reason: "start", Data: json.RawMessage(`{"x":1}`)})

	require.Equal(t, `2026-11-23T10:00:00.000Z a squares worker exit index=1 pid=42 reason=failure exit="exit status 2" code=2 uptime=3s`+"\n", out.next(t))
	require.Equal(t, `2026-11-23T10:00:00.000Z a squares pool failed retry_at=2026-11-23T10:01:00Z error="5 exits within 1m0s"`+"\n", out.next(t))
	require.Equal(t, `2026-11-23T10:00:00.000Z b squares worker start index=0 reason=start data={"x":1}`+"\n", out.next(t))

	require.JSONEq(t, `{"scope":"worker","time":"2026-11-23T10:00:00Z","kind":"exit","host":"a","pool":"other","pid":1}`, asJSON.next(t))
	require.JSONEq(t, `{"scope":"worker","time":"2026-11-23T10:00:00Z","kind":"exit","host":"a","pool":"squares",
		"index":1,"pid":42,"reason":"failure","exit":"exit status 2","code":2,"uptime":"3s"}`, asJSON.next(t))
}

func TestRun_EventsErrors(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	_, err := runLive(t, b, "events", "--pool", "bad.pool")
	require.ErrorContains(t, err, `pool "bad.pool" has '.'`)
	_, err = runLive(t, b, "events", "extra")
	require.ErrorContains(t, err, "usage: conductorctl events")
}
