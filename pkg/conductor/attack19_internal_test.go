package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// Review 19: forged ends against a submission that waits, answered from
// its job's end.
//
// A submission of a squares job waits. Before its host ends it, forged
// ends of it come: from a host of another type (its state claiming either
// type), from the job's own host with a state the store never wrote or
// refused (a fenced write, at a stale revision), and from a submitter
// (refused by the server). None answers the wait: the job's real end
// does, with the state the store wrote.
func TestAttack19_ForgedEndsDoNotAnswerAWait(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials.json")
	tokens := map[string]string{}
	for _, cr := range []auth.Credential{
		{ID: "root", Role: auth.Admin},
		{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
		{ID: "h2", Role: auth.Host, Types: []string{"cubes"}},
		{ID: "s1", Role: auth.Submitter, Types: []string{"squares"}},
	} {
		tok, err := auth.Add(creds, cr, false)
		require.NoError(t, err)
		tokens[cr.ID] = tok
	}
	c, err := New(Config{DataDir: dir, NATSListen: "127.0.0.1:0", Credentials: creds})
	require.NoError(t, err)
	taken := make(chan []string, 10)
	c.onEnds = func(ended []string) { taken <- ended }
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	connect := func(id string) *nats.Conn {
		nc, err := nats.Connect(c.NATSURL(), client.WithToken(tokens[id]), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	root, h1, h2, s1 := connect("root"), connect("h1"), connect("h2"), connect("s1")
	jobs, err := root.SubscribeSync(c.space.JobAt("squares", ""))
	require.NoError(t, err)
	require.NoError(t, root.Flush())

	answers := make(chan *nats.Msg, 1)
	go func() {
		m := nats.NewMsg(c.space.Submit("squares"))
		m.Header.Set(names.HeaderWait, "30s")
		m.Data = []byte("3")
		a, err := root.RequestMsg(m, 40*time.Second)
		if err != nil {
			t.Error(err)
		}
		answers <- a
	}()
	job, err := jobs.NextMsg(10 * time.Second)
	require.NoError(t, err)
	id := job.Header.Get(names.HeaderJobID)
	rev, err := strconv.ParseUint(job.Header.Get(names.HeaderStateRev), 10, 64)
	require.NoError(t, err)

	state := func(typ string, result string) []byte {
		b, err := json.Marshal(wire.Job{ID: id, Type: typ, Status: wire.StatusSucceeded, Attempts: 1, Result: json.RawMessage(result)})
		require.NoError(t, err)
		return b
	}
	publishEnds := func(nc *nats.Conn, typ string, st []byte) {
		t.Helper()
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		ends := wire.Ends{Type: typ, Jobs: []wire.End{{ID: id, Status: wire.StatusSucceeded, State: st}}}
		_, err = js.Publish(t.Context(), c.space.JobEnds(typ), ends.AppendJSON(nil))
		require.NoError(t, err)
		select {
		case <-taken:
		case <-time.After(10 * time.Second):
			t.Fatal("the forged ends were not taken")
		}
	}
	noAnswer := func(what string) {
		t.Helper()
		select {
		case a := <-answers:
			t.Fatalf("%s answered the wait: %s %s", what, a.Header.Get(names.HeaderStatus), a.Data)
		default:
		}
	}
	// h2, of cubes: the job's state as a squares state, and as a cubes one.
	publishEnds(h2, "cubes", state("squares", "666"))
	noAnswer("a cubes host's end with a squares state")
	publishEnds(h2, "cubes", state("cubes", "667"))
	noAnswer("a cubes host's end with a cubes state")
	// h1, of squares: a state the store never wrote.
	publishEnds(h1, "squares", state("squares", "668"))
	noAnswer("a squares host's end with a state not stored")
	// h1: a final state whose write was fenced (a stale revision), then
	// its end.
	fenced := state("squares", "670")
	_, err = hostsvc.NewCaller(h1, c.space).Store(t.Context(), "squares", wire.StoreItem{Op: wire.StoreState, Key: id, Rev: rev + 7, Data: fenced})
	require.ErrorIs(t, err, hostsvc.ErrConflict, "a write at a revision the state is not at")
	publishEnds(h1, "squares", fenced)
	noAnswer("a squares host's end with a state whose write was fenced")
	// s1, a submitter: no right to publish ends at all.
	ends := wire.Ends{Type: "squares", Jobs: []wire.End{{ID: id, Status: wire.StatusSucceeded, State: state("squares", "669")}}}
	require.NoError(t, s1.Publish(c.space.JobEnds("squares"), ends.AppendJSON(nil)))
	require.NoError(t, s1.Flush())

	// The real end: through the store, then announced.
	final := state("squares", "9")
	_, err = hostsvc.NewCaller(h1, c.space).Store(t.Context(), "squares", wire.StoreItem{Op: wire.StoreState, Key: id, Rev: rev, Data: final})
	require.NoError(t, err)
	hjs, err := jetstream.New(h1)
	require.NoError(t, err)
	ends = wire.Ends{Type: "squares", Jobs: []wire.End{{ID: id, Status: wire.StatusSucceeded, State: final}}}
	_, err = hjs.Publish(t.Context(), c.space.JobEnds("squares"), ends.AppendJSON(nil))
	require.NoError(t, err)

	var a *nats.Msg
	select {
	case a = <-answers:
	case <-time.After(40 * time.Second):
		t.Fatal("no answer")
	}
	require.NotNil(t, a)
	require.Equal(t, "200", a.Header.Get(names.HeaderStatus), "%s", a.Data)
	var j wire.Job
	require.NoError(t, json.Unmarshal(a.Data, &j))
	require.Equal(t, id, j.ID)
	require.Equal(t, "squares", j.Type)
	require.JSONEq(t, "9", string(j.Result), "the result the store wrote, not a forged one")
}

// A host on a credential of its own pulls through its account's import:
// does the status that tells it its consumer is gone reach it there? A
// pull on a consumer never made (503, no one listening), and a long poll
// waiting on a consumer deleted under it (409 Consumer Deleted): the
// statuses agent's consumerGone takes.
func TestAttack19_HostPullOnAGoneConsumerHearsSo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials.json")
	tokens := map[string]string{}
	for _, cr := range []auth.Credential{
		{ID: "root", Role: auth.Admin},
		{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
	} {
		tok, err := auth.Add(creds, cr, false)
		require.NoError(t, err)
		tokens[cr.ID] = tok
	}
	c, err := New(Config{DataDir: dir, NATSListen: "127.0.0.1:0", Credentials: creds})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	connect := func(id string) *nats.Conn {
		nc, err := nats.Connect(c.NATSURL(), client.WithToken(tokens[id]))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	root, h1 := connect("root"), connect("h1")
	consumer := c.space.ConsumerAt("squares", string(wire.PriorityNormal))
	pull := auth.HostAPIPrefix + ".CONSUMER.MSG.NEXT." + c.space.JobStream() + "." + consumer
	status := func(req string) (code, desc string) {
		t.Helper()
		inbox := h1.NewInbox()
		sub, err := h1.SubscribeSync(inbox)
		require.NoError(t, err)
		defer func() { _ = sub.Unsubscribe() }()
		require.NoError(t, h1.PublishRequest(pull, inbox, []byte(req)))
		return func() (string, string) {
			m, err := sub.NextMsg(15 * time.Second)
			if errors.Is(err, nats.ErrNoResponders) {
				return "503", "" // how NextMsg tells that status
			}
			require.NoError(t, err, "no answer to the pull")
			return m.Header.Get(names.HeaderNATSStatus), m.Header.Get(names.HeaderNATSDescription)
		}()
	}

	code, desc := status(`{"batch":1,"no_wait":true}`)
	require.Equal(t, "503", code, "a pull on a consumer never made: %s %s", code, desc)

	require.NoError(t, hostsvc.NewCaller(h1, c.space).Consumers(t.Context(), "squares", 30*time.Second))
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	stream, err := rjs.Stream(t.Context(), c.space.JobStream())
	require.NoError(t, err)
	cons, err := stream.Consumer(t.Context(), consumer)
	require.NoError(t, err)

	inbox := h1.NewInbox()
	sub, err := h1.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, h1.PublishRequest(pull, inbox, []byte(`{"batch":1,"expires":30000000000}`)))
	require.Eventually(t, func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.NumWaiting > 0
	}, 10*time.Second, 5*time.Millisecond, "the long poll never waited")
	require.NoError(t, stream.DeleteConsumer(t.Context(), consumer))
	for {
		m, err := sub.NextMsg(15 * time.Second)
		require.NoError(t, err, "the waiting pull never heard its consumer went")
		code, desc := m.Header.Get(names.HeaderNATSStatus), m.Header.Get(names.HeaderNATSDescription)
		if code == "100" {
			continue // a heartbeat
		}
		require.Equal(t, "409", code, desc)
		require.Equal(t, "consumer deleted", strings.ToLower(desc))
		break
	}
}

// The sweep's types, as a Conductor counts them: a type served only by a
// host lost lately (silent past three of its intervals) is still served,
// and its consumers stay past the idle time; once the host is heard
// leaving, nothing keeps them.
func TestAttack19_SweepKeepsTheTypeOfALostHost(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, err := New(Config{DataDir: dir, NATSListen: "127.0.0.1:0"})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, hostsvc.MakeConsumers(t.Context(), js, c.space, "t9", 0))

	heartbeat := func(leaving bool) {
		hb, err := json.Marshal(client.Host{Host: "h9", PID: 1, Started: time.Now(), Interval: client.Duration(100 * time.Millisecond),
			Leaving: leaving, Pools: []client.HostPool{{Name: "t9", Count: 1, Protocol: "channel", State: "running"}}, Workers: []client.Worker{}})
		require.NoError(t, err)
		require.NoError(t, nc.Publish(c.space.Host("h9"), hb))
		require.NoError(t, nc.Flush())
	}
	listed := func(hosts []client.Host) bool {
		for _, h := range hosts {
			if h.Host == "h9" {
				return true
			}
		}
		return false
	}
	heartbeat(false)
	require.Eventually(t, func() bool { return listed(c.liveHosts()) }, 10*time.Second, 10*time.Millisecond, "h9 never heard")
	require.Eventually(t, func() bool { return !listed(c.liveHosts()) && listed(c.lostHosts()) }, 10*time.Second, 10*time.Millisecond, "h9 never lost")

	s := newConsumerSweep(c)
	s.served = map[string]time.Time{}
	require.Contains(t, s.types(), "t9", "a lost host's types are served")
	start := time.Now()
	removed, err := s.pass(t.Context(), start, start.Add(2*time.Hour))
	require.NoError(t, err)
	require.NotContains(t, removed, "t9", "the consumers of a lost host's type went")

	// Heard again, then leaving: no longer live nor lost.
	heartbeat(false)
	require.Eventually(t, func() bool { return listed(c.liveHosts()) }, 10*time.Second, 10*time.Millisecond, "h9 not heard again")
	heartbeat(true)
	require.Eventually(t, func() bool { return !listed(c.liveHosts()) && !listed(c.lostHosts()) }, 10*time.Second, 10*time.Millisecond, "h9 left but is still listed")
	require.NotContains(t, s.types(), "t9")
	removed, err = s.pass(t.Context(), start, start.Add(4*time.Hour))
	require.NoError(t, err)
	require.Equal(t, []string{"t9"}, removed, "unserved since the last pass, idle past the hour")
}
