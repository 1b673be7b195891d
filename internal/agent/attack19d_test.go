package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/pkg/broker"
)

// Review 19d: a client on the same account, hostile or broken, that
// watches the pull requests ($JS.API.CONSUMER.MSG.NEXT.>) learns each
// one's reply subject, <level inbox>.<id>, and publishes to it.

// pulls subscribes, as such a client would, to the pull requests of sq's
// normal consumer and returns their reply subjects as they are sent.
func (b *sourceBundle) pulls(t *testing.T) <-chan string {
	t.Helper()
	replies := make(chan string, 1024)
	sub, err := b.nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT."+b.space.JobStream()+"."+b.space.Consumer("sq"), func(m *nats.Msg) {
		select {
		case replies <- m.Reply:
		default:
		}
	})
	require.NoError(t, err)
	require.NoError(t, b.nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return replies
}

// A message that is no JetStream delivery (no $JS.ACK reply: it came from
// no consumer) published to a pull request's reply subject is not a job:
// no worker runs it, and the job queued after it is the one handed out.
func TestAttack19d_ForgedJobOnThePullInbox(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	replies := b.pulls(t)
	got := make(chan *broker.Job, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		if j, err := src.Next(ctx); err == nil {
			got <- j
		}
	}()
	var reply string
	select {
	case reply = <-replies:
	case <-ctx.Done():
		t.Fatal("no pull request seen")
	}
	forged := nats.NewMsg(reply)
	forged.Header.Set(names.HeaderJobID, "forged")
	forged.Data = []byte(`"rm -rf"`)
	require.NoError(t, b.nc.PublishMsg(forged))
	// The same to a request id never sent.
	forged.Subject = reply[:strings.LastIndexByte(reply, '.')] + ".zzzz"
	require.NoError(t, b.nc.PublishMsg(forged))
	require.NoError(t, b.nc.Flush())
	b.publishRaw(t, "real", []byte("1"), nil)
	select {
	case j := <-got:
		require.Equal(t, "real", j.ID, "a forged message was handed out as a job")
	case <-ctx.Done():
		t.Fatal("no job handed out")
	}
}
