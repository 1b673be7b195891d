package agent

import (
	"context"
	"strings"
	"sync/atomic"
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

// TestKnownGap_ForgedStatusesPileUpPolls pins a known gap (an outside
// review; it fails once fixed): a client of the account that watches the
// pull requests ($JS.API.CONSUMER.MSG.NEXT.>) and forges "404 No Messages"
// to each long poll's reply subject ends the poll in the fetcher's books
// but not on the server, which holds it until it expires (5s): the fetcher
// asks again, and the polls the server holds for one waiting worker grow
// with each forgery, each able to bring a job no worker waits for (held
// ahead, its lease kept). Bounded by the consumer's 4,096 waiting
// requests and the polls' expiry; no job is lost. A fix renews a level's
// inbox when a status ends a poll, which through a host account's import
// must keep the old inbox until its requests' deadline (newInbox).
func TestKnownGap_ForgedStatusesPileUpPolls(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	const forgeries = 20
	sent := make(chan struct{}, forgeries)
	var n atomic.Int64
	sub, err := b.nc.Subscribe("$JS.API.CONSUMER.MSG.NEXT."+b.space.JobStream()+"."+b.space.Consumer("sq"), func(m *nats.Msg) {
		if !strings.Contains(string(m.Data), "expires") || n.Load() >= forgeries {
			return
		}
		n.Add(1)
		st := nats.NewMsg(m.Reply)
		st.Header.Set(names.HeaderNATSStatus, "404")
		st.Header.Set(names.HeaderNATSDescription, "No Messages")
		_ = b.nc.PublishMsg(st)
		sent <- struct{}{}
	})
	require.NoError(t, err)
	require.NoError(t, b.nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { _, _ = src.Next(ctx) }()
	for range forgeries {
		select {
		case <-sent:
		case <-ctx.Done():
			t.Fatal("the fetcher stopped polling")
		}
	}
	require.Eventually(t, func() bool { return b.waiting(t, "normal") > 2 }, 10*time.Second, 5*time.Millisecond,
		"the gap is closed: the server holds at most 2 polls for one waiting worker; make this an attack test asserting it")
}
