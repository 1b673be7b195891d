package conductor_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// The attacks of an outside review (issue 15), each now refused. A
// requester names its request's reply subject, and an answer is
// published there with the answerer's powers: conductord's answers, had
// they gone anywhere, would have purged the job stream for a host, or
// cancelled any job for a submitter.

// TestRoles_AnswersGoToInboxesOnly: conductord answers no request on a
// subject that is not an inbox, nor a credential's request on another's
// inbox.
func TestRoles_AnswersGoToInboxesOnly(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	victim, err := rootc.Submit(t.Context(), "other", 1) // queued: no host serves other
	require.NoError(t, err)

	// A host reads a state, naming the job stream's purge and the
	// state bucket's deletion as where to answer.
	h1, _ := rc.connectAs(t, "h1")
	for _, reply := range []string{"$JS.API.STREAM.PURGE.conductor-default-jobs", "$JS.API.STREAM.DELETE.KV_conductor-default-state"} {
		require.NoError(t, h1.PublishMsg(&nats.Msg{Subject: "conductor.default.as.h1.read.squares", Reply: reply, Data: []byte("no-such-job")}))
	}
	// The reads are answered once taken: once this one is, those were seen.
	_, err = h1.Request("conductor.default.as.h1.read.squares", []byte("no-such-job"), 10*time.Second)
	require.NoError(t, err)

	// A submitter names the victim's cancel key, and another credential's
	// inbox, as where to answer.
	web, _ := rc.connectAs(t, "web")
	ops, _ := rc.connectAs(t, "ops")
	spy, err := ops.SubscribeSync("_INBOX.c-ops.>")
	require.NoError(t, err)
	require.NoError(t, ops.Flush())
	bad := nats.NewMsg("conductor.default.as.web.submit.squares")
	bad.Reply, bad.Data = "$KV.conductor-default-cancel."+victim, []byte("1")
	bad.Header.Set(names.HeaderWait, "0")
	bad.Header.Set(names.HeaderIdempotencyKey, "reply-attack")
	require.NoError(t, web.PublishMsg(bad))
	require.NoError(t, web.PublishMsg(&nats.Msg{Subject: "conductor.default.as.web.job", Reply: "_INBOX.c-ops.spy", Data: []byte(victim)}))

	// conductord queued the submission (it was the submitter's to make) …
	id := client.IdempotentID("default", "squares", "reply-attack")
	require.Eventually(t, func() bool { _, err := rootc.Job(t.Context(), id); return err == nil }, 10*time.Second, 10*time.Millisecond)
	// … and answered neither where it was told.
	require.Never(t, func() bool {
		j, err := rootc.Job(t.Context(), victim)
		return err != nil || j.Status != client.StatusQueued
	}, 300*time.Millisecond, 20*time.Millisecond, "the victim was cancelled")
	_, err = spy.NextMsg(100 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "conductord answered web's request on ops's inbox")

	js, err := jetstream.New(root)
	require.NoError(t, err)
	s, err := js.Stream(t.Context(), "conductor-default-jobs")
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	require.Positive(t, info.State.Msgs, "the job stream was purged")
	_, err = js.KeyValue(t.Context(), "conductor-default-state")
	require.NoError(t, err, "the state bucket was deleted")
}

// TestRoles_HostEndsOnlyItsTypes: a host's end of a job of another type,
// carrying another job's state, or a state the store never wrote, is not
// archived; a job it ran is.
func TestRoles_HostEndsOnlyItsTypes(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	h1, e := rc.connectAs(t, "h1")
	victim, forged := uuid.NewString(), uuid.NewString()
	state := func(id, typ string) string {
		return `{"id":"` + id + `","type":"` + typ + `","status":"succeeded","attempts":1,"result":"forged","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}`
	}
	end := func(id, st string) []byte {
		return []byte(`{"type":"squares","jobs":[{"id":"` + id + `","status":"succeeded","state":` + st + `}]}`)
	}
	js, err := jetstream.New(h1)
	require.NoError(t, err)
	for _, data := range [][]byte{
		end(victim, state(victim, "other")),   // another type's
		end(victim, state(forged, "squares")), // another job's
		end(forged, state(forged, "squares")), // never stored
	} {
		_, err = js.Publish(t.Context(), "conductor.default.ends.squares", data)
		require.NoError(t, err)
	}
	// A job h1 runs: its end comes after those, and the ends are taken
	// in order: once it is archived, the forged ones were seen.
	startHost(t, rc, "h1", "squares")
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	honest, err := rootc.Submit(t.Context(), "squares", 3)
	require.NoError(t, err)
	archived := func(id string) bool {
		r, err := root.Request("conductor.default.archive.get", []byte(id), 5*time.Second)
		return err == nil && r.Header.Get(names.HeaderStatus) == "" && len(r.Data) > 0
	}
	require.Eventually(t, func() bool { return archived(honest) }, 20*time.Second, 20*time.Millisecond)
	require.False(t, archived(victim), "a host of squares archived another type's state, or another job's")
	require.False(t, archived(forged), "a host archived a state the store never wrote")
	require.Empty(t, e.list)
}

// TestRoles_HostAnswersStayInItsAccount: a host, in an account of its
// own, aims an empty pull's status answer at the job stream's purge (which
// purges it in a shared account: TestHostAccountDesign): the answer lands
// in the host's account, and the stream keeps its jobs.
func TestRoles_HostAnswersStayInItsAccount(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	_, err = rootc.Submit(t.Context(), "other", 1) // a job of a type no host serves
	require.NoError(t, err)
	h1, e := rc.connectAs(t, "h1")
	sp, _ := subject.New("default")
	require.NoError(t, hostsvc.NewCaller(h1, sp).Consumers(t.Context(), "squares", 0))
	for _, prefix := range []string{"JS.conductor.API", "$JS.API"} {
		next := nats.NewMsg(prefix + ".CONSUMER.MSG.NEXT.conductor-default-jobs.pool-squares")
		next.Reply, next.Data = "$JS.API.STREAM.PURGE.conductor-default-jobs", []byte(`{"batch":1,"no_wait":true}`)
		require.NoError(t, h1.PublishMsg(next))
	}
	// A pull after them, answered on its inbox: they were seen by then.
	_, err = h1.Request("JS.conductor.API.CONSUMER.MSG.NEXT.conductor-default-jobs.pool-squares", []byte(`{"batch":1,"no_wait":true}`), 5*time.Second)
	require.NoError(t, err)
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	s, err := rjs.Stream(t.Context(), "conductor-default-jobs")
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs, "a host of squares purged the job stream")
	require.True(t, e.has(`Publish to "$JS.API.CONSUMER.MSG.NEXT`), "the pull outside its prefix is refused by name")
}

// TestRoles_HostWritesItsTypesStatesOnly: a host writes no state or
// dead entry itself (so it rolls no bucket up: a state put with
// Nats-Rollup: all would purge every state), and through conductord it
// writes its own types' jobs' states only: not another type's job's, not
// a state of another type.
func TestRoles_HostWritesItsTypesStatesOnly(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	id, err := rootc.Submit(t.Context(), "other", 1)
	require.NoError(t, err)
	h1, e := rc.connectAs(t, "h1")
	for _, subj := range []string{"JS.conductor.API.$KV.conductor-default-state.x", "$KV.conductor-default-state.x", "JS.conductor.API.$KV.conductor-default-dead.x"} {
		roll := nats.NewMsg(subj)
		roll.Header.Set("Nats-Rollup", "all")
		roll.Data = []byte("{}")
		_, err = h1.RequestMsg(roll, 200*time.Millisecond)
		require.Error(t, err, subj)
		require.Eventually(t, func() bool { return e.has(`Publish to "` + subj + `"`) }, 5*time.Second, 5*time.Millisecond)
	}
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	states, err := rjs.KeyValue(t.Context(), "conductor-default-state")
	require.NoError(t, err)
	entry, err := states.Get(t.Context(), id)
	require.NoError(t, err, "the roll-up purged the states")

	sp, _ := subject.New("default")
	svc := hostsvc.NewCaller(h1, sp)
	rev := entry.Revision()
	forged, _ := json.Marshal(map[string]any{"id": id, "type": "squares", "status": "succeeded", "result": 666})
	_, err = svc.Store(t.Context(), "squares", wire.StoreItem{Op: wire.StoreState, Key: id, Rev: rev, Data: forged})
	require.ErrorContains(t, err, "refused", "a state of squares over a job of other")
	forged, _ = json.Marshal(map[string]any{"id": id, "type": "other", "status": "succeeded", "result": 666})
	_, err = svc.Store(t.Context(), "squares", wire.StoreItem{Op: wire.StoreState, Key: id, Rev: rev, Data: forged})
	require.ErrorContains(t, err, "refused", "a state of other on squares' subject")
	_, err = svc.Store(t.Context(), "other", wire.StoreItem{Op: wire.StoreState, Key: id, Rev: rev, Data: forged})
	require.Error(t, err, "other's subject is not h1's")
	require.Eventually(t, func() bool { return e.has(`Publish to "conductor.default.as.h1.store.other"`) }, 5*time.Second, 5*time.Millisecond)
	j, err := rootc.Job(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, j.Status, "the other type's job is untouched")
}

// TestRoles_HostReadsItsTypesStatesOnly: a state is keyed by the job's id
// alone; a host reads through conductord, which answers with its types'
// states only: a job of another type, whose id it knows, is refused, in
// the bucket and in the archive alike, with the result nowhere in the
// answer.
func TestRoles_HostReadsItsTypesStatesOnly(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	other, err := rootc.Submit(t.Context(), "other", "secret-payload")
	require.NoError(t, err)
	mine, err := rootc.Submit(t.Context(), "squares", 3)
	require.NoError(t, err)
	h1, _ := rc.connectAs(t, "h1")
	sp, _ := subject.New("default")
	svc := hostsvc.NewCaller(h1, sp)

	data, rev, err := svc.Read(t.Context(), "squares", mine)
	require.NoError(t, err)
	require.NotZero(t, rev)
	require.Contains(t, string(data), mine)
	_, _, err = svc.Read(t.Context(), "squares", other)
	require.ErrorContains(t, err, "not a job of type squares")
	require.NotContains(t, err.Error(), "secret-payload")
	data, _, err = svc.Read(t.Context(), "squares", "no-such-job")
	require.NoError(t, err)
	require.Nil(t, data, "no state")
	_, _, err = svc.Read(t.Context(), "squares", "a*b")
	require.ErrorContains(t, err, "job id")
}

// TestRoles_HostReissued: a host credential issued again (a new secret)
// gets a new account, with its imports and its command subject, and runs
// jobs and takes commands under it.
func TestRoles_HostReissued(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	tok, err := auth.Add(rc.creds, auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}}, true)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		nc, err := nats.Connect(rc.c.NATSURL(), client.WithToken(tok), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	rc.tokens["h1"] = tok
	startHost(t, rc, "h1", "squares")
	web, _ := rc.connectAs(t, "web")
	reply := submitByRequest(t, web, "web", "squares")
	require.Equal(t, "200", reply.Header.Get(names.HeaderStatus), "%s", reply.Data)
	ops, _ := rc.connectAs(t, "ops")
	oc, err := client.New(ops, client.Config{})
	require.NoError(t, err)
	res, err := oc.Command(t.Context(), "squares", client.PoolCommand{Op: client.OpRecycle}, "h1")
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.True(t, res[0].OK, res[0].Error)
}

// TestRoles_HostMakesNoConsumer: a host makes no consumer (conductord
// makes its types', internal/hostsvc), for a consumer delivers where its
// config says: a push consumer on the cancel bucket, or on the job
// stream, aimed at another host's command subject is refused, and
// nothing comes there. It asks conductord for its own types' consumers
// only, under its own credential id.
func TestRoles_HostMakesNoConsumer(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	root, _ := rc.connectAs(t, "root")
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	kv, err := rjs.KeyValue(t.Context(), "conductor-default-cancel")
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), "x", []byte(`{"op":"drain","pool":"*"}`))
	require.NoError(t, err)
	h2sub, err := root.SubscribeSync("conductor.default.control.h2")
	require.NoError(t, err)
	require.NoError(t, root.Flush())
	h1, e := rc.connectAs(t, "h1")
	for stream, filter := range map[string]string{
		"KV_conductor-default-cancel": "",
		"conductor-default-jobs":      "conductor.default.jobs.squares",
	} {
		cfg := `{"name":"evil","deliver_subject":"conductor.default.control.h2","ack_policy":"none","deliver_policy":"all"}`
		subj := "JS.conductor.API.CONSUMER.CREATE." + stream + ".evil"
		if filter != "" {
			subj += "." + filter
		}
		_, err = h1.Request(subj, []byte(`{"stream_name":"`+stream+`","config":`+cfg+`}`), 200*time.Millisecond)
		require.Error(t, err, "%s answered", subj)
		require.Eventually(t, func() bool { return e.has(`Publish to "` + subj + `"`) }, 5*time.Second, 5*time.Millisecond)
	}
	_, err = h2sub.NextMsg(200 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "something came into h2's command subject")

	// Its own types' consumers, by request to conductord: yes; another
	// type's, or under another credential's id: refused by the server.
	m, err := h1.Request("conductor.default.as.h1.consumers.squares", []byte(`{"ack_wait":30000000000}`), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "200", m.Header.Get(names.HeaderStatus), "%s", m.Data)
	for _, subj := range []string{"conductor.default.as.h1.consumers.other", "conductor.default.as.h2.consumers.other", "conductor.default.consumers.other"} {
		_, err := h1.Request(subj, nil, 200*time.Millisecond)
		require.Error(t, err, subj)
		require.Eventually(t, func() bool { return e.has(`Publish to "` + subj + `"`) }, 5*time.Second, 5*time.Millisecond)
	}
	_, err = rjs.Consumer(t.Context(), "conductor-default-jobs", "pool-other")
	require.ErrorIs(t, err, jetstream.ErrConsumerNotFound)
}

// TestHostAccountDesign_WithdrawnPollDropped pins what internal/agent's
// fetcher relies on when it withdraws a long poll by renewing its inbox
// (levels.go, newInbox): through a host account's import too, the server
// drops a poll whose inbox is gone, rather than deliver jobs into it, and
// the next job waits for the next pull.
func TestHostAccountDesign_WithdrawnPollDropped(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	h1, _ := rc.connectAs(t, "h1")
	sp, _ := subject.New("default")
	require.NoError(t, hostsvc.NewCaller(h1, sp).Consumers(t.Context(), "squares", 0))
	next := "JS.conductor.API.CONSUMER.MSG.NEXT.conductor-default-jobs.pool-squares"
	old, err := h1.SubscribeSync(h1.NewInbox())
	require.NoError(t, err)
	require.NoError(t, h1.PublishRequest(next, old.Subject, []byte(`{"batch":10,"expires":5000000000}`)))
	require.NoError(t, h1.Flush())
	require.NoError(t, old.Unsubscribe()) // the poll withdrawn, as a renewed inbox does
	require.NoError(t, h1.Flush())
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	_, err = rootc.Submit(t.Context(), "squares", 1)
	require.NoError(t, err)
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	c, err := rjs.Consumer(t.Context(), "conductor-default-jobs", "pool-squares")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := c.Info(t.Context())
		return err == nil && info.NumPending == 1 && info.NumWaiting == 0
	}, 10*time.Second, 10*time.Millisecond, "the job waits, the withdrawn poll is gone")
	info, err := c.Info(t.Context())
	require.NoError(t, err)
	require.Zero(t, info.NumAckPending, "the job went to the withdrawn poll")
	m, err := h1.Request(next, []byte(`{"batch":1,"no_wait":true}`), 5*time.Second)
	require.NoError(t, err)
	require.NotEqual(t, "404", m.Header.Get("Status"), "a new pull takes the job")
}
