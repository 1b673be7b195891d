package hostsvc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
)

// TestServer_StopServesNoRequestAfter: a request in Admit when Stop is
// called (its handler already running, which Unsubscribe does not wait
// for) starts no work once Stop has begun: it is answered 503, and no
// consumer is made after Stop returned.
func TestServer_StopServesNoRequestAfter(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	b := setup(t, func(id, typ string) error {
		if typ == "late" {
			close(entered)
			<-release
		}
		return nil
	})
	// b.nc makes the consumers; the requester is another connection.
	reply := b.nc.NewInbox()
	sub, err := b.nc.SubscribeSync(reply)
	require.NoError(t, err)
	require.NoError(t, b.nc.PublishRequest(b.sp.ConsumersOf("late"), reply, nil))
	select {
	case <-entered:
	case <-time.After(waitLimit):
		t.Fatal("the request did not reach Admit")
	}
	stopped := make(chan struct{})
	go func() { b.srv.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(waitLimit):
		close(release)
		t.Fatal("Stop waits for the request in Admit: fine, but then this test is moot")
	}
	close(release)
	m, err := sub.NextMsg(waitLimit)
	require.NoError(t, err)
	_, cerr := b.js.Consumer(context.Background(), b.sp.JobStream(), b.sp.ConsumerAt("late", "normal"))
	require.Equal(t, "503", m.Header.Get(names.HeaderStatus),
		"a request answered %s after Stop returned (consumer made after Stop: %v)", m.Header.Get(names.HeaderStatus), !errors.Is(cerr, jetstream.ErrConsumerNotFound))
}
