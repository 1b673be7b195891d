package hostsvc

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
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

// TestServer_NoAnswerAfterStop: the store's requests run on the store's
// workers, which Unsubscribe does not wait for, and a host can make each
// request slow to check (a state of many keys). Stop waits for the
// requests being served and drops those waiting: once it has returned,
// the Server answers no request any more.
func TestServer_NoAnswerAfterStop(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var data bytes.Buffer
	data.WriteString(`{"id":"x","type":"sq"`)
	for i := 0; data.Len() < 900<<10; i++ {
		data.WriteString(`,"k` + strconv.FormatInt(int64(i), 36) + `":0`)
	}
	data.WriteString(`}`)
	req := wire.AppendStoreItem(nil, wire.StoreItem{Op: wire.StoreState, Key: "x", Data: data.Bytes()})

	// The answers come on b.nc, the Server's own connection.
	inbox := b.nc.NewInbox()
	sub, err := b.nc.SubscribeSync(inbox + ".*")
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	const sent = 16 // within h1's pending bytes: none answered 429 at once
	for i := range sent {
		require.NoError(t, b.nc.PublishRequest(b.sp.StoreAs("h1", "sq"), inbox+"."+strconv.Itoa(i), req))
	}
	// The first answer: the store is serving h1's requests.
	_, err = sub.NextMsg(waitLimit)
	require.NoError(t, err)
	b.srv.Stop()
	// Stop flushed b.nc: the answers given before it returned are now
	// with sub, in order before anything after.
	before, _, err := sub.Pending()
	require.NoError(t, err)
	for range before {
		_, err := sub.NextMsg(0)
		require.NoError(t, err)
	}
	t.Logf("%d of %d requests answered before Stop returned", before+1, sent)
	// No signal can tell of a request that is never answered: a short
	// bounded wait for one answered late (300 ms, far past a request's
	// check).
	_, err = sub.NextMsg(300 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "a store request answered after Stop returned (%d of %d answered before)", before+1, sent)
}
