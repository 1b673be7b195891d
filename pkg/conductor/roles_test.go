package conductor_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// roleCluster is a conductor with one credential of each role, and a
// workerd-like agent on host h1 holding h1's host credential.
type roleCluster struct {
	c      *conductor.Conductor
	creds  string            // the credentials file
	tokens map[string]string // by credential id
}

func startRoleCluster(t *testing.T) *roleCluster {
	t.Helper()
	return startClusterOf(t, conductor.Config{},
		auth.Credential{ID: "root", Role: auth.Admin},
		auth.Credential{ID: "ops", Role: auth.Operator},
		auth.Credential{ID: "web", Role: auth.Submitter, Types: []string{"squares"}},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
		auth.Credential{ID: "h2", Role: auth.Host, Types: []string{"other"}},
	)
}

// roleHostTypes is the type of each host credential of startRoleCluster.
var roleHostTypes = map[string]string{"h1": "squares", "h2": "other"}

// startClusterOf starts a conductord with cfg on credentials creds, each
// issued into its credentials file, their tokens kept.
func startClusterOf(t *testing.T, cfg conductor.Config, creds ...auth.Credential) *roleCluster {
	t.Helper()
	dir := t.TempDir()
	rc := &roleCluster{creds: filepath.Join(dir, "credentials.json"), tokens: map[string]string{}}
	for _, cr := range creds {
		tok, err := auth.Add(rc.creds, cr, false)
		require.NoError(t, err)
		rc.tokens[cr.ID] = tok
	}
	cfg.DataDir, cfg.NATSListen, cfg.Credentials, cfg.CredentialsCheck = dir, "127.0.0.1:0", rc.creds, 20*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	rc.c = c
	return rc
}

// errs is a connection's asynchronous errors: the server's permission
// violations come this way.
type errs struct {
	mu   sync.Mutex
	list []string
}

func (e *errs) add(_ *nats.Conn, _ *nats.Subscription, err error) {
	e.mu.Lock()
	e.list = append(e.list, err.Error())
	e.mu.Unlock()
}

func (e *errs) has(s string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.list {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// connectAs connects with the token of credential id.
func (rc *roleCluster) connectAs(t *testing.T, id string) (*nats.Conn, *errs) {
	t.Helper()
	e := &errs{}
	nc, err := nats.Connect(rc.c.NATSURL(), client.WithToken(rc.tokens[id]), nats.ErrorHandler(e.add), nats.MaxReconnects(0))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc, e
}

// refusedPub checks that publishing to subj is refused: the server says
// so, and a subscriber with every power does not see it.
func refusedPub(t *testing.T, rc *roleCluster, id, subj string) {
	t.Helper()
	nc, e := rc.connectAs(t, id)
	root, _ := rc.connectAs(t, "root")
	sub, err := root.SubscribeSync(subj)
	require.NoError(t, err)
	require.NoError(t, root.Flush())
	probe := []byte(`"probe ` + uuid.NewString() + `"`)
	require.NoError(t, nc.Publish(subj, probe))
	require.Eventually(t, func() bool { return e.has(`Publish to "` + subj + `"`) }, 5*time.Second, 5*time.Millisecond,
		"%s publishes to %s", id, subj)
	noneOf(t, sub, func(m *nats.Msg) bool { return string(m.Data) == string(probe) }, "a refused publish to %s reached a subscriber", subj)
}

// unseenPub checks that a publish to subj by credential id reaches no
// subscriber with every power in the namespace's account.
func unseenPub(t *testing.T, rc *roleCluster, id, subj string) {
	t.Helper()
	nc, _ := rc.connectAs(t, id)
	root, _ := rc.connectAs(t, "root")
	sub, err := root.SubscribeSync(subj)
	require.NoError(t, err)
	require.NoError(t, root.Flush())
	probe := []byte(`"probe ` + uuid.NewString() + `"`)
	require.NoError(t, nc.Publish(subj, probe))
	require.NoError(t, nc.Flush())
	// A marker after it, on a subject the credential reaches (the logs of
	// a pool of its type): once root has it, the probe would have come.
	barrier(t, nc, root, "conductor.default.logs."+id+"."+roleHostTypes[id])
	noneOf(t, sub, func(m *nats.Msg) bool { return string(m.Data) == string(probe) }, "%s's publish to %s reached the namespace", id, subj)
}

// barrier publishes on mark from pub and waits until sub has it: what pub
// sent before has been through the server.
func barrier(t *testing.T, pub, sub *nats.Conn, mark string) {
	t.Helper()
	msub, err := sub.SubscribeSync(mark)
	require.NoError(t, err)
	require.NoError(t, sub.Flush())
	require.NoError(t, pub.Publish(mark, nil))
	_, err = msub.NextMsg(5 * time.Second)
	require.NoError(t, err, "the barrier %s", mark)
}

// noneOf checks that none of the messages sub holds is bad.
func noneOf(t *testing.T, sub *nats.Subscription, bad func(*nats.Msg) bool, msgAndArgs ...any) {
	t.Helper()
	for {
		m, err := sub.NextMsg(20 * time.Millisecond)
		if errors.Is(err, nats.ErrTimeout) {
			return
		}
		require.NoError(t, err)
		require.False(t, bad(m), msgAndArgs...)
	}
}

// unheardSub checks that credential id, subscribed to subj, hears
// nothing of a publish to pub in the namespace's account.
func unheardSub(t *testing.T, rc *roleCluster, id, subj, pub string) {
	t.Helper()
	nc, _ := rc.connectAs(t, id)
	sub, err := nc.SubscribeSync(subj)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	root, _ := rc.connectAs(t, "root")
	require.NoError(t, root.Publish(pub, []byte("{}")))
	require.NoError(t, root.Flush())
	// A marker after it, on a subject the credential hears (its inbox).
	barrier(t, root, nc, auth.InboxOf(id)+".probe")
	noneOf(t, sub, func(m *nats.Msg) bool { return m.Subject == pub }, "%s, subscribed to %s, heard %s", id, subj, pub)
}

// refusedSub checks that subscribing to subj is refused.
func refusedSub(t *testing.T, rc *roleCluster, id, subj string) {
	t.Helper()
	nc, e := rc.connectAs(t, id)
	_, err := nc.SubscribeSync(subj)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.has(`Subscription to "` + subj + `"`) }, 5*time.Second, 5*time.Millisecond,
		"%s subscribes to %s", id, subj)
}

func startHost(t *testing.T, rc *roleCluster, id string, pools ...string) {
	t.Helper()
	nc, e := rc.connectAs(t, id)
	self, err := os.Executable()
	require.NoError(t, err)
	var specs []broker.Spec
	for _, p := range pools {
		specs = append(specs, broker.Spec{Name: p, Count: 1, Cmd: []string{self}})
	}
	a, err := agent.New(agent.Config{Conn: nc, Host: id, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), Pools: specs})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(func() {
		a.Stop()
		e.mu.Lock()
		defer e.mu.Unlock()
		require.Empty(t, e.list, "host %s was refused something it needs", id)
	})
}

// submitByRequest submits 7 to typ by request as credential id, on its
// own submit subject, and waits for it.
func submitByRequest(t *testing.T, nc *nats.Conn, id, typ string) *nats.Msg {
	t.Helper()
	m := nats.NewMsg("conductor.default.as." + id + ".submit." + typ)
	m.Data = []byte("7")
	m.Header.Set(names.HeaderWait, "20s")
	reply, err := nc.RequestMsg(m, 30*time.Second)
	require.NoError(t, err)
	return reply
}

// TestRoles_NATS: a job goes from a submitter through a host with every
// step allowed to each, and each role's refusals hold.
func TestRoles_NATS(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	startHost(t, rc, "h1", "squares")

	web, webErrs := rc.connectAs(t, "web")
	reply := submitByRequest(t, web, "web", "squares")
	require.Equal(t, "200", reply.Header.Get(names.HeaderStatus), "%s", reply.Data)
	var j client.Job
	require.NoError(t, json.Unmarshal(reply.Data, &j))
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.JSONEq(t, "49", string(j.Result))

	// A Client that reads and writes JetStream itself is refused at once:
	// a submitter has no JetStream API.
	_, err := client.New(web, client.Config{})
	require.ErrorIs(t, err, client.ErrForbidden)

	// A Client told it is a submitter's goes through conductord, and
	// reads the jobs of its types only.
	sc, err := client.New(web, client.Config{Submitter: true, RecheckInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	got, err := sc.Job(t.Context(), j.ID)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, got.Status)
	ops, _ := rc.connectAs(t, "ops")
	oc, err := client.New(ops, client.Config{})
	require.NoError(t, err)
	otherID, err := oc.Submit(t.Context(), "other", 1)
	require.NoError(t, err)
	_, err = sc.Job(t.Context(), otherID)
	require.ErrorIs(t, err, client.ErrJobNotFound, "another type's job is not the submitter's to read")
	_, err = sc.Cancel(t.Context(), j.ID)
	require.ErrorIs(t, err, client.ErrForbidden)
	id, err := sc.Submit(t.Context(), "squares", 3, client.WithPriority(client.PriorityHigh), client.WithMaxAttempts(2))
	require.NoError(t, err)
	got, err = sc.Wait(t.Context(), id)
	require.NoError(t, err)
	require.JSONEq(t, "9", string(got.Result))
	got, err = sc.SubmitAndWait(t.Context(), "squares", 4)
	require.NoError(t, err)
	require.JSONEq(t, "16", string(got.Result))
	_, err = sc.Submit(t.Context(), "other", 4)
	require.ErrorIs(t, err, client.ErrForbidden)
	webErrs.mu.Lock()
	webErrs.list = nil // the refused writes of the first client
	webErrs.mu.Unlock()

	t.Run("submitter", func(t *testing.T) {
		t.Parallel()
		for _, subj := range []string{
			"conductor.default.jobs.squares",                                // straight into the stream, forged headers and all
			"conductor.default.as.web.submit.other",                         // a type not its own
			"conductor.default.submit.squares",                              // not on its own subject
			"conductor.default.as.ops.submit.squares",                       // on another's
			"$KV.conductor-default-state." + j.ID,                           // a state
			"$KV.conductor-default-cancel." + j.ID,                          // a cancel
			"conductor.default.control.h1",                                  // a pool command
			"conductor.default.tail.h1",                                     // a host's logs
			"conductor.default.hosts.h9",                                    // a heartbeat
			"conductor.default.ends.squares",                                // a job end
			"$JS.API.STREAM.PURGE.conductor-default-jobs",                   // the queue
			"$JS.API.CONSUMER.MSG.NEXT.conductor-default-jobs.pool-squares", // take a job
			// No JetStream API at all: its answers would go where the
			// submitter's reply subject says.
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO.KV_conductor-default-state",
			"$JS.API.DIRECT.GET.KV_conductor-default-state.$KV.conductor-default-state." + j.ID,
			"$JS.API.STREAM.MSG.GET.KV_conductor-default-state",
			"conductor.default.archive.get",
			"conductor.default.as.ops.job", // another credential's reads
		} {
			refusedPub(t, rc, "web", subj)
		}
		for _, subj := range []string{">", "conductor.default.jobs.squares", "conductor.default.events.job.other.succeeded", "_INBOX.>", "conductor.default.tail.h1", "conductor.default.logs.h1.squares"} {
			refusedSub(t, rc, "web", subj)
		}
	})
	t.Run("host", func(t *testing.T) {
		t.Parallel()
		// A host is in an account of its own: what it may not reach is
		// not there (no server error), and nothing of it reaches the
		// namespace's account.
		for _, subj := range []string{
			"conductor.default.hosts.h2",        // another host's heartbeat
			"conductor.default.logs.h2.squares", // another host's logs
			"conductor.default.ends.other",      // ends of a type not its own
			"conductor.default.jobs.squares",    // queue a job
			"conductor.default.submit.squares",  // submit one
			"conductor.default.control.h2",      // command another host
			"conductor.default.tail.h2",         // ask another host's logs
			"_INBOX.c-ops.abc.1",                // an inbox that is no command's reply
			"$JS.API.STREAM.PURGE.conductor-default-jobs",
			"$JS.API.STREAM.DELETE.KV_conductor-default-state",
			"$JS.API.CONSUMER.MSG.NEXT.conductor-default-jobs.pool-other", // another type's jobs
			"$KV.conductor-default-cancel." + j.ID,
			// its own consumer, pointed at every type's jobs
			"$JS.API.CONSUMER.CREATE.conductor-default-jobs.pool-squares.conductor.default.jobs.>",
			"$JS.API.CONSUMER.CREATE.conductor-default-jobs.pool-squares",
			"$JS.API.CONSUMER.DURABLE.CREATE.conductor-default-jobs.pool-squares",
			"JS.conductor.API.STREAM.PURGE.conductor-default-jobs", // under its API prefix
			"JS.conductor.API.CONSUMER.MSG.NEXT.conductor-default-jobs.pool-other",
			"JS.conductor.API.CONSUMER.CREATE.conductor-default-jobs.pool-squares.conductor.default.jobs.>",
			"JS.conductor.API.$KV.conductor-default-cancel." + j.ID,
			// a consumer of its own (conductord makes them: internal/hostsvc)
			"JS.conductor.API.CONSUMER.CREATE.conductor-default-jobs.pool-squares.conductor.default.jobs.squares",
			"JS.conductor.API.CONSUMER.CREATE.KV_conductor-default-cancel.x",
			"conductor.default.as.h2.consumers.other", // another host's consumers
			"conductor.default.cancels",               // a forged cancel on the feed
			// a state or dead entry of its own (conductord writes them, checked)
			"JS.conductor.API.$KV.conductor-default-state." + j.ID,
			"JS.conductor.API.$KV.conductor-default-dead." + j.ID,
			"conductor.default.as.h1.store.other", // another type's states
			// a state read from the bucket or the archive, by id alone
			// (conductord reads its types' for it: ReadAs)
			"JS.conductor.API.DIRECT.GET.KV_conductor-default-state.$KV.conductor-default-state." + j.ID,
			"JS.conductor.API.STREAM.MSG.GET.KV_conductor-default-state",
			"conductor.default.archive.get",
			"conductor.default.as.h1.read.other", // another type's states
			"conductor.default.as.h2.read.squares",
		} {
			unseenPub(t, rc, "h1", subj)
		}
		for subj, pub := range map[string]string{
			"conductor.default.control.h2":     "conductor.default.control.h2",
			"conductor.default.tail.h2":        "conductor.default.tail.h2",
			"conductor.default.tail.*":         "conductor.default.tail.h2",
			"conductor.default.jobs.>":         "conductor.default.jobs.zz.zz",
			"conductor.default.submit.squares": "conductor.default.submit.squares",
			"_INBOX.>":                         "_INBOX.c-ops.abc.1",
			">":                                "conductor.default.hosts.h2",
		} {
			unheardSub(t, rc, "h1", subj, pub)
		}
	})
	t.Run("operator", func(t *testing.T) {
		t.Parallel()
		nc, e := rc.connectAs(t, "ops")
		oc, err := client.New(nc, client.Config{})
		require.NoError(t, err)
		res, err := oc.Command(t.Context(), "squares", client.PoolCommand{Op: client.OpRecycle}, "h1")
		require.NoError(t, err)
		require.Len(t, res, 1)
		require.Empty(t, res[0].Error)
		got, err := oc.Job(t.Context(), j.ID)
		require.NoError(t, err)
		require.Equal(t, j.ID, got.ID)
		jobs, err := oc.Jobs(t.Context(), client.JobQuery{Type: "squares"})
		require.NoError(t, err)
		require.NotEmpty(t, jobs)
		hosts, err := oc.Hosts(t.Context())
		require.NoError(t, err)
		require.Len(t, hosts, 1)

		// A job nobody serves, cancelled while queued; a dead job,
		// queued again.
		id, err := oc.Submit(t.Context(), "idle", 1)
		require.NoError(t, err)
		cj, err := oc.Cancel(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, client.StatusCancelled, cj.Status)
		dead, err := oc.SubmitAndWait(t.Context(), "squares", "fail")
		require.NoError(t, err)
		require.Equal(t, client.StatusDead, dead.Status)
		list, err := oc.DeadJobs(t.Context(), "squares", 10)
		require.NoError(t, err)
		require.NotEmpty(t, list)
		_, err = oc.Requeue(t.Context(), dead.ID)
		require.NoError(t, err)
		again, err := oc.Wait(t.Context(), dead.ID)
		require.NoError(t, err)
		require.Equal(t, client.StatusDead, again.Status)
		batch, err := oc.SubmitBatch(t.Context(), "squares", []json.RawMessage{json.RawMessage("5"), json.RawMessage("6")})
		require.NoError(t, err)
		require.Equal(t, 2, batch.Total)
		require.Eventually(t, func() bool {
			b, err := oc.Batch(t.Context(), batch.ID)
			return err == nil && oc.CountBatch(t.Context(), b) == nil && b.Succeeded == 2
		}, 20*time.Second, 20*time.Millisecond)
		require.Empty(t, e.list)
		for _, subj := range []string{
			"$JS.API.STREAM.PURGE.conductor-default-jobs",
			"$JS.API.STREAM.DELETE.conductor-default-jobs",
			"$JS.API.CONSUMER.MSG.NEXT.conductor-default-jobs.pool-squares",
			"conductor.default.hosts.h1",
		} {
			refusedPub(t, rc, "ops", subj)
		}
	})
	t.Run("admin", func(t *testing.T) {
		t.Parallel()
		nc, e := rc.connectAs(t, "root")
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		_, err = js.Stream(t.Context(), "conductor-default-jobs")
		require.NoError(t, err)
		require.Empty(t, e.list)
	})
}

// TestRoles_Revoke: a revoked credential's connection is closed within a
// check of the file, and it cannot connect again; one issued again
// refuses its old token and takes its new one.
func TestRoles_Revoke(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	closed := make(chan struct{})
	nc, err := nats.Connect(rc.c.NATSURL(), client.WithToken(rc.tokens["web"]), nats.MaxReconnects(0),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	require.NoError(t, err)
	t.Cleanup(nc.Close)

	require.NoError(t, auth.Revoke(rc.creds, "web"))
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked credential's connection is still open")
	}
	_, err = nats.Connect(rc.c.NATSURL(), client.WithToken(rc.tokens["web"]), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization)

	// Issued again: the old token is refused, the new one taken.
	old := rc.tokens["h2"]
	tok, err := auth.Add(rc.creds, auth.Credential{ID: "h2", Role: auth.Host}, true)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		nc, err := nats.Connect(rc.c.NATSURL(), client.WithToken(old), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
		}
		return errors.Is(err, nats.ErrAuthorization)
	}, 10*time.Second, 10*time.Millisecond)
	nc2, err := nats.Connect(rc.c.NATSURL(), client.WithToken(tok), nats.MaxReconnects(0))
	require.NoError(t, err)
	nc2.Close()

	// A file others may read is not taken: the credentials stay as they were.
	require.NoError(t, os.Chmod(rc.creds, 0o644))
	tok3, err := auth.Add(filepath.Join(t.TempDir(), "x.json"), auth.Credential{ID: "h3", Role: auth.Host}, false)
	require.NoError(t, err)
	nc3, err := nats.Connect(rc.c.NATSURL(), client.WithToken(tok), nats.MaxReconnects(0))
	require.NoError(t, err, "an unreadable file keeps the credentials read before")
	nc3.Close()
	_, err = nats.Connect(rc.c.NATSURL(), client.WithToken(tok3), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization)
}

// TestRoles_CredentialsFileChecked: conductord does not start on a
// credentials file others may read, or one that is not valid.
func TestRoles_CredentialsFileChecked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.json")
	_, err := auth.Add(path, auth.Credential{ID: "root", Role: auth.Admin}, false)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(path, 0o640))
	_, err = conductor.New(conductor.Config{DataDir: dir, Credentials: path})
	require.ErrorContains(t, err, "chmod 600")

	require.NoError(t, os.WriteFile(path, []byte(`{"version":1,"credentials":[{"id":"a b","role":"admin","sha256":"00"}]}`), 0o600))
	require.NoError(t, os.Chmod(path, 0o600))
	_, err = conductor.New(conductor.Config{DataDir: dir, Credentials: path})
	require.ErrorContains(t, err, "credential id")
}

// TestRoles_FirstCredentialClosesAnOpenConductor: a conductor with no
// secret is open to connections without a token; the first credential
// issued closes them, and a connection without one is refused.
func TestRoles_FirstCredentialClosesAnOpenConductor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.json")
	c, err := conductor.New(conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0", MemoryStorage: true, CredentialsCheck: 20 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	closed := make(chan struct{})
	nc, err := nats.Connect(c.NATSURL(), nats.MaxReconnects(0), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	require.NoError(t, err)
	t.Cleanup(nc.Close)

	_, err = auth.Add(path, auth.Credential{ID: "root", Role: auth.Admin}, false)
	require.NoError(t, err)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("a connection without a token outlived the first credential")
	}
	_, err = nats.Connect(c.NATSURL(), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization)
	// Removing every credential does not open it again.
	require.NoError(t, auth.Revoke(path, "root"))
	require.NoError(t, os.Remove(path))
	require.Never(t, func() bool {
		nc, err := nats.Connect(c.NATSURL(), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
		}
		return err == nil
	}, 200*time.Millisecond, 20*time.Millisecond)
}

// TestRoles_SubmissionSlotsPerCredential: one credential's submissions
// waiting at once are bounded; past it, it is answered 503 at once, and
// another credential's submissions are still served.
func TestRoles_SubmissionSlotsPerCredential(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	web, _ := rc.connectAs(t, "web")
	replies := make(chan *nats.Msg, conductor.MaxSubmitWaitersPerCredential+1)
	sub, err := web.ChanSubscribe(auth.InboxOf("web")+".slots.*", replies)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// Jobs of squares with no host: each waits for its end.
	for i := range conductor.MaxSubmitWaitersPerCredential + 1 {
		m := nats.NewMsg("conductor.default.as.web.submit.squares")
		m.Reply = auth.InboxOf("web") + ".slots." + strconv.Itoa(i)
		m.Data = []byte("1")
		m.Header.Set(names.HeaderWait, "10m")
		require.NoError(t, web.PublishMsg(m))
	}
	select {
	case r := <-replies:
		require.Equal(t, "503", r.Header.Get(names.HeaderStatus))
		require.Contains(t, string(r.Data), "credential web has 1000 submissions waiting")
	case <-time.After(30 * time.Second):
		t.Fatal("no submission refused past the credential's bound")
	}
	// Another credential is served meanwhile.
	ops, _ := rc.connectAs(t, "ops")
	queued(t, ops, "conductor.default.submit.squares")
}

// queued submits a job by request on subj, answered once it is queued,
// and checks that it was.
func queued(t *testing.T, nc *nats.Conn, subj string) {
	t.Helper()
	m := nats.NewMsg(subj)
	m.Data = []byte("1")
	m.Header.Set(names.HeaderWait, "0")
	r, err := nc.RequestMsg(m, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, "202", r.Header.Get(names.HeaderStatus), "%s", r.Data)
}

// TestRoles_SubscriptionsBounded: one connection's subscriptions are
// bounded; past the bound the server refuses the next, and the other
// connections are served.
func TestRoles_SubscriptionsBounded(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	web, e := rc.connectAs(t, "web")
	for i := range 100_000 {
		_, err := web.Subscribe(auth.InboxOf("web")+"."+strconv.Itoa(i), func(*nats.Msg) {})
		require.NoError(t, err)
	}
	_, err := web.Subscribe(auth.InboxOf("web")+".one-more", func(*nats.Msg) {})
	require.NoError(t, err) // refused by the server, asynchronously
	require.Eventually(t, func() bool { return e.has("maximum subscriptions exceeded") }, 10*time.Second, 10*time.Millisecond)
	// Another connection of the same credential is served.
	other, _ := rc.connectAs(t, "web")
	queued(t, other, "conductor.default.as.web.submit.squares")
}
