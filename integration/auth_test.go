package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// TestCluster_WorkerdRefusedThenAdmitted: a workerd whose token conductord
// refuses says so, naming the flag and the variable, and keeps retrying;
// once conductord runs with that token, the workerd connects by itself and
// its workers run jobs.
func TestCluster_WorkerdRefusedThenAdmitted(t *testing.T) {
	c := newCluster(t, withToken("old-token"))
	w := start(t, "workerd", "--conductor", c.natsURL(), "--host-id", "late", "--token", "new-token", "--pool", squares(1))
	const said = "authentication failed: check --token / CONDUCTOR_TOKEN; retrying"
	require.Eventually(t, func() bool { return strings.Contains(w.output(), said) }, 30*time.Second, 20*time.Millisecond,
		"workerd says why it is refused")
	select {
	case <-w.exited:
		t.Fatalf("workerd exited while refused: %v", w.err)
	default:
	}

	c.conductor.stop(t, 30*time.Second)
	c.startConductor(withToken("new-token"))
	c.waitWorkers("squares", 1)
	cl, err := client.Connect(c.natsURL(), client.Config{}, nats.Token("new-token"))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	j, err := cl.SubmitAndWait(ctx, "squares", 7)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.JSONEq(t, "49", string(j.Result))
}
