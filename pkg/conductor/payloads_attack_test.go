package conductor_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// payloadObjectNames lists the objects of the payload bucket.
func payloadObjectNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	obs, err := js.ObjectStore(t.Context(), "conductor-default-payloads")
	require.NoError(t, err)
	infos, err := obs.List(t.Context())
	if err != nil {
		require.ErrorIs(t, err, jetstream.ErrNoObjectsFound)
		return nil
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	return names
}

// A job cancelled while queued ends at once (Client.Cancel announces its
// end, with no object: the client does not know it); its message is
// acked, unrun, when a host takes it, and that host's end, announced
// again (wire.Ends.Again), names the object. conductord used to filter
// such ends out (unknownEnds: it had counted the job's end already)
// before the payload reaper saw them: the object stayed for ever.
func TestAttackPayload_CancelWhileQueuedLeavesNoObject(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{InlinePayload: 64 << 10})
	data, _ := bigPayload("big:", 200<<10)
	id, err := c.Client().Submit(t.Context(), "squares", json.RawMessage(data))
	require.NoError(t, err)
	require.Len(t, payloadObjectNames(t, bundle.js), 1)
	j, err := c.Client().Cancel(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, client.StatusCancelled, j.Status)

	startAgent(t, bundle, "squares")
	waitNoObjects(t, bundle.js)
}

// A repeated submission with an idempotency key, made while its job is
// still queued and untouched (client.RepublishWithin), stores its payload
// again under a new object and publishes again, and the job stream drops
// the copy as a duplicate: the new object is named by no message. It
// used to stay for ever; a submitter over HTTP could fill the store with
// it, 64 MiB a request.
func TestAttackPayload_IdempotentRepeatLeavesNoObject(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{InlinePayload: 64 << 10})
	data, want := bigPayload("big:", 200<<10)
	first, err := c.Client().Submit(t.Context(), "squares", json.RawMessage(data), client.WithIdempotencyKey("k1"))
	require.NoError(t, err)
	for range 3 {
		again, err := c.Client().Submit(t.Context(), "squares", json.RawMessage(data), client.WithIdempotencyKey("k1"))
		require.NoError(t, err)
		require.Equal(t, first, again)
	}
	require.Len(t, payloadObjectNames(t, bundle.js), 1, "one object: the one the job's message names")

	startAgent(t, bundle, "squares")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	j, err := c.Client().Wait(ctx, first)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status, j.Error)
	require.JSONEq(t, want, string(j.Result))
	waitNoObjects(t, bundle.js)
}

// A large HTTP body takes its share of the large bodies' budget as its
// bytes arrive, not all of it before the first: a chunked upload that
// stalls after a few bytes holds none of it, and another upload is read
// (and refused 400, its body being no JSON), not refused 503. (Review:
// the whole --max-payload was taken up front and held for as long as the
// connection lasted; seven stalled uploads refused every other.)
func TestAttackPayload_StalledBodyHoldsNoBudget(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{MaxPayload: conductor.MaxPayloadLimit})
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)

	stalled, w := io.Pipe()
	go func() {
		_, _ = w.Write([]byte(`"a`)) // and never more
	}()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/jobs/squares", stalled)
	require.NoError(t, err)
	req.ContentLength = -1 // chunked
	stalledDone := make(chan struct{})
	go func() {
		defer close(stalledDone)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	t.Cleanup(func() {
		_ = w.CloseWithError(errors.New("test over"))
		<-stalledDone
	})

	post := func() int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/jobs/squares", io.NopCloser(strings.NewReader("x")))
		require.NoError(t, err)
		req.ContentLength = -1
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 10 {
		require.Equal(t, http.StatusBadRequest, post(), "another chunked upload is read")
	}
}

// A dead job keeps its payload in its state when it traveled in its
// message; Requeue publishes it again. The job stream now takes messages
// of the inline limit only (and 4 KiB of headers), so a job that died
// with a payload larger than today's inline limit (queued before the
// upgrade that brought large payloads, when the stream took --max-payload,
// or before --inline-payload was lowered) could never be queued again:
// the stream refused its message, every time. Requeue passes it by
// reference now.
func TestAttackPayload_RequeueOfADeadJobOverTheInlineLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c1, err := conductor.New(conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0", InlinePayload: 512 << 10})
	require.NoError(t, err)
	require.NoError(t, c1.Start(context.Background()))
	nc1, err := nats.Connect(c1.NATSURL())
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)
	a1, err := agent.New(agent.Config{
		Conn: nc1, Host: "h1", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Pools: []broker.Spec{{Name: "squares", Count: 1, Cmd: []string{self}}},
	})
	require.NoError(t, err)
	require.NoError(t, a1.Start(context.Background()))

	ok := filepath.Join(t.TempDir(), "ok")
	data, want := bigPayload("bigfail:"+ok+":", 300<<10)
	dead, err := c1.Client().SubmitAndWait(t.Context(), "squares", json.RawMessage(data))
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, dead.Status)
	require.Nil(t, dead.PayloadRef, "under the inline limit of the time: in its message, and in its state")
	require.NotEmpty(t, dead.Payload)
	a1.Stop()
	nc1.Close()
	c1.Stop()

	// The same store, a lower inline limit.
	c2, err := conductor.New(conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0", InlinePayload: 64 << 10})
	require.NoError(t, err)
	require.NoError(t, c2.Start(context.Background()))
	t.Cleanup(c2.Stop)
	nc2, err := nats.Connect(c2.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc2.Close)
	js2, err := jetstream.New(nc2)
	require.NoError(t, err)
	startAgent(t, &testBundle{nc: nc2, js: js2}, "squares")

	require.NoError(t, os.WriteFile(ok, nil, 0o600))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err = c2.Client().Requeue(ctx, dead.ID)
	require.NoError(t, err, "a dead job is queued again, whatever the inline limit of the day")
	done, err := c2.Client().Wait(ctx, dead.ID)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, done.Status, done.Error)
	require.JSONEq(t, want, string(done.Result))
	waitNoObjects(t, js2)
}
