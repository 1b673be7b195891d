package conductor_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// feedRecorder is a hostsvc.Cancels keeping what Follow tells.
type feedRecorder struct {
	mu     sync.Mutex
	ids    map[string]bool
	loaded int
	reads  int
}

func (r *feedRecorder) Cancelled(id string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[string]bool{}
	}
	r.ids[id] = true
}

func (r *feedRecorder) Loaded() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loaded++
}

func (r *feedRecorder) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

func (r *feedRecorder) loads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loaded
}

func followFeed(t *testing.T, nc *nats.Conn) *feedRecorder {
	t.Helper()
	sp, _ := subject.New("default")
	r := &feedRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// As workerd's watchCancels: again until it answers (503 while
		// conductord reads the bucket).
		for {
			err := hostsvc.NewCaller(nc, sp).Follow(ctx, r, time.Hour)
			if ctx.Err() != nil {
				done <- err
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return r.loads() >= 1 }, 10*time.Second, 5*time.Millisecond, "h1 has read the cancels")
	return r
}

// TestHostsvc_ForeignFeedMessageIgnored: an operator may make push
// consumers on the namespace's buckets, and a push consumer delivers
// where its config says: on conductor.<ns>.cancels, which every host
// account imports. A host takes from the feed only what conductord
// publishes there (an id that is a job id, numbered, of its epoch): the
// forged one is not recorded, and makes it read nothing again.
func TestHostsvc_ForeignFeedMessageIgnored(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	h1, _ := rc.connectAs(t, "h1")
	rec := followFeed(t, h1)
	loadsBefore := rec.loads()

	ops, _ := rc.connectAs(t, "ops")
	forged := "forged-" + strings.Repeat("x", 100_000) // far past any key the bucket could hold
	// A dead entry of the operator's, whose value is the "id".
	_, err := ops.Request("$KV.conductor-default-dead.anything", []byte(forged), 5*time.Second)
	require.NoError(t, err)
	cfg := `{"stream_name":"KV_conductor-default-dead","config":{"name":"evil","deliver_subject":"conductor.default.cancels","ack_policy":"none","deliver_policy":"all"}}`
	m, err := ops.Request("$JS.API.CONSUMER.CREATE.KV_conductor-default-dead.evil", []byte(cfg), 5*time.Second)
	require.NoError(t, err)
	var resp struct {
		Error *struct{ Description string } `json:"error"`
	}
	require.NoError(t, json.Unmarshal(m.Data, &resp))
	require.Nil(t, resp.Error, "%s", m.Data)

	// Wait until the push consumer has delivered its entry, then a real
	// cancel after it: once h1 has the real one, it has seen the forged.
	root, _ := rc.connectAs(t, "root")
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, err := root.Request("$JS.API.CONSUMER.INFO.KV_conductor-default-dead.evil", nil, 5*time.Second)
		if err != nil {
			return false
		}
		var info struct {
			Delivered struct {
				Consumer uint64 `json:"consumer_seq"`
			} `json:"delivered"`
		}
		return json.Unmarshal(m.Data, &info) == nil && info.Delivered.Consumer >= 1
	}, 10*time.Second, 5*time.Millisecond, "the operator's push consumer delivered into the feed")
	kv, err := rjs.KeyValue(t.Context(), "conductor-default-cancel")
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), "real-cancel", []byte("{}"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return rec.has("real-cancel") }, 10*time.Second, 5*time.Millisecond)

	_, err = kv.Get(t.Context(), "forged-x")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the forged id is in no cancel bucket")
	require.False(t, rec.has(forged), "h1 recorded a cancelled id an operator forged on the feed (a %d-byte id)", len(forged))
	require.Equal(t, loadsBefore, rec.loads(), "a forged feed message made h1 read every page again")
}

// TestHostsvc_PageFloodStarvesNoOtherHost: a host's page requests past
// its rate are answered 429 at once, so that another host's request,
// answered in turn, still comes within its wait while the first floods.
func TestHostsvc_PageFloodStarvesNoOtherHost(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	sp, _ := subject.New("default")
	root, _ := rc.connectAs(t, "root")
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	kv, err := rjs.KeyValue(t.Context(), "conductor-default-cancel")
	require.NoError(t, err)
	// A page's worth of cancelled ids: an operator's bulk cancel.
	pad := strings.Repeat("j", 100)
	for i := range 2000 {
		_, err := kv.Put(t.Context(), pad+strconv.Itoa(i), []byte("{}"))
		require.NoError(t, err)
	}
	h1, _ := rc.connectAs(t, "h1")
	h2, _ := rc.connectAs(t, "h2")
	c2 := hostsvc.NewCaller(h2, sp)
	require.Eventually(t, func() bool {
		p, err := c2.Page(t.Context(), 0)
		return err == nil && (p.More || len(p.IDs) >= 2000)
	}, 30*time.Second, 10*time.Millisecond, "conductord holds the ids")

	// h1's burst: requests it does not even wait for.
	inbox := h1.NewInbox()
	for range 2_000 {
		require.NoError(t, h1.PublishRequest(sp.CancelsAs("h1"), inbox, []byte(`{"after":0}`)))
	}
	require.NoError(t, h1.Flush())

	start := time.Now()
	_, err = c2.Page(t.Context(), 0)
	require.NoError(t, err, "h2 could not read its cancels while h1 floods (after %v)", time.Since(start))
}

// TestHostsvc_AckWaitOnlyRaised: the consumers of a type are shared by
// every host of the type, whose leases are made for their own ack wait:
// a host asking for less (malicious, or with a short --ack-wait) leaves
// the longer one, so that no running job comes again to it.
func TestHostsvc_AckWaitOnlyRaised(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	sp, _ := subject.New("default")
	root, _ := rc.connectAs(t, "root")
	// Another host of squares (the shared token: an admin) asks for 10 min.
	require.Eventually(t, func() bool {
		return hostsvc.NewCaller(root, sp).Consumers(t.Context(), "squares", 10*time.Minute) == nil
	}, 10*time.Second, 10*time.Millisecond)
	h1, _ := rc.connectAs(t, "h1")
	require.NoError(t, hostsvc.NewCaller(h1, sp).Consumers(t.Context(), "squares", time.Nanosecond))
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	c, err := rjs.Consumer(t.Context(), "conductor-default-jobs", "pool-squares")
	require.NoError(t, err)
	require.GreaterOrEqual(t, c.CachedInfo().Config.AckWait, 10*time.Minute,
		"h1 cut the ack wait of the consumer another host of squares pulls from to %v", c.CachedInfo().Config.AckWait)
}

// TestHostsvc_ConsumerFloodRefusesNoOtherHost: one host's requests for
// consumers are rate limited and hold at most an eighth of conductord's
// slots: another host still gets its own type's.
func TestHostsvc_ConsumerFloodRefusesNoOtherHost(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	sp, _ := subject.New("default")
	h1, _ := rc.connectAs(t, "h1")
	h2, _ := rc.connectAs(t, "h2")
	c2 := hostsvc.NewCaller(h2, sp)
	require.Eventually(t, func() bool { return c2.Consumers(t.Context(), "other", 0) == nil }, 10*time.Second, 10*time.Millisecond)
	inbox := h1.NewInbox()
	for range 500 {
		require.NoError(t, h1.PublishRequest(sp.ConsumersAs("h1", "squares"), inbox, nil))
	}
	require.NoError(t, h1.Flush())
	require.NoError(t, c2.Consumers(t.Context(), "other", 0), "h2 refused its consumers while h1 floods")
}

// TestHostAccount_OneWayFloodHoldsLittle: a message with a reply subject
// through a host's import holds a response mapping in the server until it
// is answered. A host publishing heartbeats, logs and events (which nothing
// answers) with reply subjects as fast as it can holds them a tenth of a
// second, not the ten seconds a request's answer may take: the mappings
// are gone at once, while its heartbeats still reach conductord.
func TestHostAccount_OneWayFloodHoldsLittle(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	sp, _ := subject.New("default")
	h1, _ := rc.connectAs(t, "h1")
	root, _ := rc.connectAs(t, "root")
	heard := make(chan *nats.Msg, 1)
	sub, err := root.Subscribe(sp.Host("h1"), func(m *nats.Msg) {
		select {
		case heard <- m:
		default:
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, root.Flush())

	inbox := h1.NewInbox()
	for i := range 30_000 {
		subj := []string{sp.Host("h1"), sp.Logs("h1", "p"), sp.WorkerEvent("p", "started"), sp.JobEvent("squares", "running")}[i%4]
		require.NoError(t, h1.PublishRequest(subj, inbox, []byte("{}")))
	}
	// A sync point, not a measure: 30,000 messages through the import
	// can take more than Flush's default wait on a loaded machine.
	require.NoError(t, h1.FlushTimeout(time.Minute))
	select {
	case <-heard:
	case <-time.After(10 * time.Second):
		t.Fatal("h1's heartbeat never reached the namespace")
	}
	require.Eventually(t, func() bool { return conductor.PendingHostAnswers(rc.c) == 0 }, 3*time.Second, 10*time.Millisecond,
		"the mappings of h1's one-way messages are held past a tenth of a second: %d", conductor.PendingHostAnswers(rc.c))
}
