package conductor_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

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

// HTTP bodies over the inline limit share a budget of 512 MiB, and each
// is given its share before a byte of it is read: its Content-Length, or
// the whole payload limit if it has none (chunked). The share is held
// until the request is answered: while its body trickles in, however
// slowly (no read deadline bounds it), and with ?wait= while its job
// runs. One chunked upload that stalls, under --max-payload 256 MiB,
// refuses every other chunked submission 503 for as long as its
// connection lasts; seven do as much under the default 64 MiB.
//
// TestKnownGap: this passes while the gap is there. Once the budget is
// taken as the bytes arrive, or a stalled body is cut off, the second
// upload is read (and refused 400, its body being no JSON), and this
// test fails: rename it TestAttackPayload_StalledBodyHoldsNoBudget and
// assert the 400.
func TestKnownGap_StalledBodyHoldsTheLargeBodyBudget(t *testing.T) {
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
	require.Eventually(t, func() bool { return post() == http.StatusServiceUnavailable }, 20*time.Second, 10*time.Millisecond,
		"a stalled chunked body holds the whole budget (256 MiB + 1 of 512 MiB): another chunked upload is refused")
	require.Equal(t, http.StatusServiceUnavailable, post(), "and still is")
}
