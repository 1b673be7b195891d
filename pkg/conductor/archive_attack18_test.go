package conductor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestAttack18_Archive_PeerAnswerForAnotherJob: a conductord that asks its
// peers for job id's archived state takes the first state answered as
// job id's. An answer that is not job id's (a peer's bug, a stale
// member, any client of an external NATS without per-role permissions
// that can write a member key and subscribe to the peers' subject) must
// not be served as job id's state.
//
// FOUND by the outside attack, fixed since (low; external NATS only: the embedded server's grants refuse
// every role but admin, TestAttack18_Leader_BucketAndPeersRefused):
// archiver.peers returns m.Data as is; a reader of "victim-1" gets a
// succeeded job with another id and a result the answerer chose. Fix:
// decode the answer (wire.Job) and keep it only if its ID is the one
// asked for (and it is final), counting any other answer as a failure;
// document the permissions an external NATS must give conductord alone
// (conductor.<ns>.archive.peers, $KV.conductor-<ns>-leader.>).
func TestAttack18_Archive_PeerAnswerForAnotherJob(t *testing.T) {
	t.Parallel()
	bundle, url := attack18Bundle(t)
	c := attack18Start(t, url, "", conductor.Config{LeaderLease: 3 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	forger, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(forger.Close)
	_, err = forger.Subscribe("conductor.default.archive.peers", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"id":"someone-else","type":"squares","status":"succeeded","attempts":1,"result":1234}`))
	})
	require.NoError(t, err)
	require.NoError(t, forger.Flush())
	kv, err := bundle.js.KeyValue(ctx, "conductor-default-leader")
	require.NoError(t, err)
	_, err = kv.Put(ctx, "member.forger-1", []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.Leader().Members == 2 }, 5*time.Second, 10*time.Millisecond, "the forger counted")

	j, err := c.Client().Job(ctx, "victim-1")
	if err == nil {
		require.Equal(t, "victim-1", j.ID, "the archived state of another job served as victim-1's: %+v", j)
		return
	}
	require.True(t, errors.Is(err, client.ErrJobNotFound) || errors.Is(err, client.ErrArchiveUnavailable), "%v", err)
}
