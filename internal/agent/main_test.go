package agent

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/subject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serveHosts plays conductord's part for the hosts on nc (it makes their
// consumers, passes the cancels on, and stores for hosts with a
// credential: internal/hostsvc), the cancel and dead buckets made if
// missing (the state bucket must be there), until the test ends.
func serveHosts(t testing.TB, nc *nats.Conn, js jetstream.JetStream, space subject.Space) {
	t.Helper()
	for _, b := range []string{space.CancelBucket(), space.DeadBucket()} {
		_, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: b})
		require.NoError(t, err)
	}
	s := hostsvc.NewServer(hostsvc.Config{Conn: nc, JS: js, Space: space})
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(s.Stop)
}
