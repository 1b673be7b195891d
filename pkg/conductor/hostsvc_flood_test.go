package conductor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// One host's store requests, costly to check or many, against
// conductord's store, which every host shares: each now waits its own
// credential's turn, and reads no message of another type.

// manyKeys is a job's state of about size bytes: id and type right,
// then as many short top-level keys as fit: costly to decode.
func manyKeys(id, typ string, size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":"` + id + `","type":"` + typ + `"`)
	for i := 0; b.Len() < size-64; i++ {
		b.WriteString(`,"k` + strconv.FormatInt(int64(i), 36) + `":0`)
	}
	b.WriteString(`}`)
	return b.Bytes()
}

// smallStore is a one-item request of h2's (other), refused at once when
// served: it names no job message.
var smallStore = wire.StoreItem{Op: wire.StoreState, Key: "y", Data: []byte(`{"id":"y","type":"other"}`)}

// TestHostsvc_BigStatesStarveNoOtherHost: h1 (squares) sends two dozen
// store requests of one item each, a 2 MiB state of many keys, far
// within its rate in items. Its requests wait behind its own, are rated
// in bytes, and a state of more than 64 keys is refused before it is
// decoded whole: h2's (other) one-item requests are each answered by the
// store while h2 still waits (its caller's 5 s). With one queue for all
// and every state decoded, under -race, h2 was not answered at all.
func TestHostsvc_BigStatesStarveNoOtherHost(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	sp, _ := subject.New("default")
	h1, _ := rc.connectAs(t, "h1")
	h2, _ := rc.connectAs(t, "h2")
	c1, c2 := hostsvc.NewCaller(h1, sp), hostsvc.NewCaller(h2, sp)

	big := wire.AppendStoreItem(nil, wire.StoreItem{Op: wire.StoreState, Key: "x", Data: manyKeys("x", "squares", 2<<20)})
	const flood = 24
	for range flood {
		// Answers unread: h1 does not wait for them.
		require.NoError(t, h1.PublishRequest(c1.StoreSubject("squares"), h1.NewInbox(), big))
	}
	// Once flushed, the server has passed h1's requests on to conductord's
	// store: h2's come after them.
	require.NoError(t, h1.Flush())

	for range 3 {
		start := time.Now()
		_, err := c2.Store(t.Context(), "other", smallStore)
		require.ErrorContains(t, err, "names no job message", "h2's store request, after %v, was not answered by the store behind h1's %d big one-item requests", time.Since(start), flood)
	}
}

// bigOtherJob queues a job of type other with a 1 MiB payload, and
// returns its sequence in the job stream.
func bigOtherJob(t *testing.T, rc *roleCluster) uint64 {
	t.Helper()
	sp, _ := subject.New("default")
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	big, _ := json.Marshal(strings.Repeat("p", 1<<20-64))
	_, err = rootc.Submit(t.Context(), "other", json.RawMessage(big))
	require.NoError(t, err)
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	js, err := rjs.Stream(t.Context(), sp.JobStream())
	require.NoError(t, err)
	info, err := js.Info(t.Context())
	require.NoError(t, err)
	return info.State.LastSeq
}

// firstStates is a store request of n first states of squares, each
// naming job message seq.
func firstStates(n int, seq uint64) []byte {
	var req []byte
	for range n {
		req = wire.AppendStoreItem(req, wire.StoreItem{Op: wire.StoreState, Key: "k", Seq: seq, Data: []byte(`{"id":"k","type":"squares"}`)})
	}
	return req
}

// TestHostsvc_ReadsNoOtherTypesMessage: a first state names its job's
// message by its sequence in the job stream, which the store reads to
// check it. h1 (squares) names, 256 times a request, the sequence of a
// queued 1 MiB job of type other: were the message read whole, a 10 KB
// request would make conductord fetch 256 MiB. The store reads by
// squares's subjects only: every item is refused and its connection
// reads far less than the one message; and a dozen such requests hold
// up no other host: h2 is answered by the store while it still waits
// (its caller's 5 s; served after at most one of h1's requests a worker).
func TestHostsvc_ReadsNoOtherTypesMessage(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	sp, _ := subject.New("default")
	seq := bigOtherJob(t, rc)
	h1, _ := rc.connectAs(t, "h1")
	h2, _ := rc.connectAs(t, "h2")
	c1, c2 := hostsvc.NewCaller(h1, sp), hostsvc.NewCaller(h2, sp)
	const items = 256
	req := firstStates(items, seq)

	in := conductor.StoreInBytes(rc.c)
	m, err := h1.Request(c1.StoreSubject("squares"), req, 30*time.Second)
	require.NoError(t, err)
	read := conductor.StoreInBytes(rc.c) - in
	rs, err := hostsvc.ParseStoreAnswer(m, items)
	require.NoError(t, err)
	for i, r := range rs {
		require.NotEmpty(t, r.Error, "item %d naming another type's job message was taken", i)
	}
	require.Less(t, read, uint64(1<<20), "the store read %d bytes to check %d items naming another type's 1 MiB job message", read, items)

	const flood = 12
	for range flood {
		require.NoError(t, h1.PublishRequest(c1.StoreSubject("squares"), h1.NewInbox(), req))
	}
	require.NoError(t, h1.Flush()) // h1's requests are conductord's before h2's
	start := time.Now()
	_, err = c2.Store(t.Context(), "other", smallStore)
	require.ErrorContains(t, err, "names no job message", "h2's store request, after %v, was not answered by the store behind h1's %d requests naming another type's 1 MiB job", time.Since(start), flood)
}

// TestHostsvc_SlowReadsCutNoConnection: h1 keeps sending the requests of
// TestHostsvc_ReadsNoOtherTypesMessage, 20 a second (within its rates),
// while web, a submitter of squares, submits through conductord. Had the
// store read the big message on conductord's own connection, the server
// would cut it as a slow consumer, losing the answers conductord waits
// for on it: its connection stays up, and each submission is queued
// within 5 s.
func TestHostsvc_SlowReadsCutNoConnection(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	sp, _ := subject.New("default")
	seq := bigOtherJob(t, rc)
	h1, _ := rc.connectAs(t, "h1")
	c1 := hostsvc.NewCaller(h1, sp)
	req := firstStates(256, seq)
	web, _ := rc.connectAs(t, "web")
	sc, err := client.New(web, client.Config{Submitter: true})
	require.NoError(t, err)

	var answered atomic.Int64
	inbox := h1.NewInbox()
	sub, err := h1.Subscribe(inbox+".*", func(*nats.Msg) { answered.Add(1) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = h1.PublishRequest(c1.StoreSubject("squares"), inbox+"."+strconv.Itoa(i), req)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	require.Eventually(t, func() bool { return answered.Load() >= 5 }, 10*time.Second, 5*time.Millisecond, "the store serves h1's requests")

	for i := range 10 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		start := time.Now()
		_, err := sc.Submit(ctx, "squares", i)
		cancel()
		require.NoError(t, err, "web's submission %d failed after %v while h1's store requests ran", i, time.Since(start))
	}
	// The store still serves h1's requests: its flood went on throughout.
	n := answered.Load()
	require.Eventually(t, func() bool { return answered.Load() >= n+3 }, 10*time.Second, 5*time.Millisecond, "the store stopped serving h1's requests")
	require.Zero(t, conductor.Reconnects(rc.c), "h1's store requests made the server close conductord's own connection")
}
