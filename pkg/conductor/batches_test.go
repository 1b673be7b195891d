package conductor_test

import (
	"context"
	"encoding/json"
	"net/http"
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
	require.Contains(t, body, `"queued": 4`, "no worker yet")

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
	require.Contains(t, got, "body is over the limit of 110000 bytes; nothing was queued")
}

// batchQuiet is long enough for a second end event to have come.
const batchQuiet = time.Second
