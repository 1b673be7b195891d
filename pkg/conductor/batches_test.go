package conductor_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestConductor_Batches queues a batch over HTTP, follows its progress and
// gets its one end event.
func TestConductor_Batches(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	space, _ := subject.New("default")
	ends, err := bundle.nc.SubscribeSync(space.BatchEvent("*"))
	require.NoError(t, err)
	require.NoError(t, bundle.nc.Flush())

	code, body := post(t, srv, "/v1/batches/squares", "1\n2\n\n\"fail\"\n4\n")
	require.Equal(t, http.StatusAccepted, code, body)
	var b client.Batch
	require.NoError(t, json.Unmarshal([]byte(body), &b))
	require.Equal(t, 4, b.Total)
	require.Equal(t, 4, b.Queued)

	code, body = get(t, srv, "/v1/batches/"+b.ID)
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"queued":4`, "no worker yet")

	startAgent(t, bundle, "squares")
	m, err := ends.NextMsg(30 * time.Second)
	require.NoError(t, err)
	var end client.Batch
	require.NoError(t, json.Unmarshal(m.Data, &end))
	require.Equal(t, b.ID, end.ID)
	require.Equal(t, 3, end.Succeeded)
	require.Equal(t, 1, end.Dead)
	require.False(t, end.EndedAt.IsZero())
	_, err = ends.NextMsg(2 * batchQuiet)
	require.ErrorIs(t, err, nats.ErrTimeout, "one end event")

	got, err := c.Client().Batch(context.Background(), b.ID)
	require.NoError(t, err)
	require.True(t, got.Ended())
	j, err := c.Client().Job(context.Background(), b.ID+"-1")
	require.NoError(t, err)
	require.JSONEq(t, "4", string(j.Result))

	code, body = post(t, srv, "/v1/batches/squares", "1\nnot json\n")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, "line 2: payload is not valid JSON; nothing was queued")
	code, _ = post(t, srv, "/v1/batches/squares", "\n\n")
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = get(t, srv, "/v1/batches/nope")
	require.Equal(t, http.StatusNotFound, code)
}

// A batch body over MaxBatchJobs x (MaxPayload+1) bytes is refused whole
// while it is read, not after.
func TestConductor_BatchBodyTooLarge(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{MaxPayload: 10})
	srv := serve(t, c)
	body := "1\n" + strings.Repeat("\n", client.MaxBatchJobs*11)
	code, got := post(t, srv, "/v1/batches/squares", body)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, got)
	require.Contains(t, got, "body is over the limit of 110000 bytes (conductord --max-batch-bytes); nothing was queued: split it into several batches")
}

// batchQuiet is long enough for a second end event to have come.
const batchQuiet = time.Second

// A batch whose submission was cut part way is completed by submitting it
// again with its idempotency key: the jobs queued before are not queued
// again, and every job runs once. A repeat of the whole batch queues
// nothing.
func TestConductor_BatchIdempotencyKeyCompletes(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{MaxPayload: 16})
	cl := c.Client()
	ctx := context.Background()
	payloads := []json.RawMessage{json.RawMessage("1"), json.RawMessage("2"), json.RawMessage(`"` + strings.Repeat("x", 20) + `"`), json.RawMessage("4")}

	_, err := cl.SubmitBatch(ctx, "squares", payloads, client.WithIdempotencyKey("k1"))
	require.ErrorContains(t, err, "jobs 0 to 1 are queued")
	var tooLarge *client.PayloadTooLargeError
	require.ErrorAs(t, err, &tooLarge)

	payloads[2] = json.RawMessage("3")
	b, err := cl.SubmitBatch(ctx, "squares", payloads, client.WithIdempotencyKey("k1"))
	require.NoError(t, err)
	require.Equal(t, 4, b.Total)
	require.False(t, b.Submitting)
	again, err := cl.SubmitBatch(ctx, "squares", payloads, client.WithIdempotencyKey("k1"))
	require.NoError(t, err)
	require.Equal(t, b.ID, again.ID, "the key names the batch")
	_, err = cl.SubmitBatch(ctx, "squares", payloads[:3], client.WithIdempotencyKey("k1"))
	require.ErrorIs(t, err, client.ErrBatchMismatch)

	startAgent(t, bundle, "squares")
	for i := range 4 {
		j, err := cl.Wait(ctx, b.ID+"-"+strconv.Itoa(i))
		require.NoError(t, err)
		require.Equal(t, client.StatusSucceeded, j.Status)
		require.Equal(t, 1, j.Attempts, "job %d ran once", i)
		require.JSONEq(t, strconv.Itoa((i+1)*(i+1)), string(j.Result))
	}
	require.Eventually(t, func() bool {
		got, err := cl.Batch(ctx, b.ID)
		return err == nil && got.Ended() && got.Succeeded == 4
	}, 10*time.Second, 20*time.Millisecond)
	info, err := bundle.js.Stream(ctx, "conductor-default-jobs")
	require.NoError(t, err)
	si, err := info.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 4, si.State.LastSeq, "each job was published once")
}
