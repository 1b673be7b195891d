package conductor_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// TestNamespaces_Isolated: two namespaces on one NATS server, each with
// its conductord, its hosts (both named h1) and its submitters, run
// their jobs, and neither can see, take or change the other's: not its
// streams, jobs, states, heartbeats or subjects, whatever its role.
func TestNamespaces_Isolated(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.json")
	tokens := map[string]string{}
	for _, cr := range []auth.Credential{
		{ID: "a-root", Role: auth.Admin},
		{ID: "a-web", Role: auth.Submitter},
		{ID: "h1", Role: auth.Host},
		{ID: "b-conductord", Role: auth.Admin, Namespace: "b"},
		{ID: "b-web", Role: auth.Submitter, Namespace: "b"},
		{ID: "b-h1", Role: auth.Host, HostID: "h1", Namespace: "b"},
	} {
		tok, err := auth.Add(path, cr, false)
		require.NoError(t, err)
		tokens[cr.ID] = tok
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	a, err := conductor.New(conductor.Config{DataDir: dir, Namespace: "a", NATSListen: "127.0.0.1:0", Credentials: path, Logger: log.With("ns", "a")})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)
	b, err := conductor.New(conductor.Config{DataDir: t.TempDir(), Namespace: "b", NATSURL: a.NATSURL(), Token: tokens["b-conductord"], Logger: log.With("ns", "b")})
	require.NoError(t, err)
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)

	connect := func(id string) *nats.Conn {
		nc, err := nats.Connect(a.NATSURL(), client.WithToken(tokens[id]), nats.MaxReconnects(0))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	self, err := os.Executable()
	require.NoError(t, err)
	host := func(ns, cred string) {
		ag, err := agent.New(agent.Config{Conn: connect(cred), Namespace: ns, Host: "h1", Logger: log.With("host", cred),
			Pools: []broker.Spec{{Name: "squares", Count: 1, Cmd: []string{self}}}})
		require.NoError(t, err)
		require.NoError(t, ag.Start(context.Background()))
		t.Cleanup(ag.Stop)
	}
	host("a", "h1")
	host("b", "b-h1")

	submit := func(ns, cred string, n int) client.Job {
		m := nats.NewMsg("conductor." + ns + ".as." + cred + ".submit.squares")
		m.Data, _ = json.Marshal(n)
		m.Header.Set(names.HeaderWait, "20s")
		reply, err := connect(cred).RequestMsg(m, 30*time.Second)
		require.NoError(t, err)
		require.Equal(t, "200", reply.Header.Get(names.HeaderStatus), "%s", reply.Data)
		var j client.Job
		require.NoError(t, json.Unmarshal(reply.Data, &j))
		return j
	}
	// Each namespace runs its jobs on its own h1.
	ja := submit("a", "a-web", 3)
	jb := submit("b", "b-web", 4)
	require.JSONEq(t, "9", string(ja.Result))
	require.JSONEq(t, "16", string(jb.Result))
	require.Equal(t, "h1", ja.History[0].Host)

	// b's admin sees none of a's streams, and a stream of its own on a's
	// subjects takes none of a's messages.
	bjs, err := jetstream.New(connect("b-conductord"))
	require.NoError(t, err)
	for _, s := range []string{"conductor-a-jobs", "KV_conductor-a-state", "conductor-a-ends"} {
		_, err := bjs.Stream(t.Context(), s)
		require.ErrorIs(t, err, jetstream.ErrStreamNotFound, s)
	}
	// b's account is bounded: its admin is trusted with b, not the server.
	ai, err := bjs.AccountInfo(t.Context())
	require.NoError(t, err)
	require.Equal(t, int64(10<<30), ai.Limits.MaxStore)
	require.Equal(t, int64(256<<20), ai.Limits.MaxMemory)
	require.Equal(t, 32, ai.Limits.MaxStreams)
	require.Equal(t, 10_000, ai.Limits.MaxConsumers)
	_, err = bjs.CreateStream(t.Context(), jetstream.StreamConfig{Name: "huge", Subjects: []string{"huge"}, Storage: jetstream.MemoryStorage, MaxBytes: 1 << 30})
	require.Error(t, err, "a stream past the account's memory")
	spy, err := bjs.CreateStream(t.Context(), jetstream.StreamConfig{Name: "spy", Subjects: []string{"conductor.a.>"}, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	bsub, err := connect("b-conductord").SubscribeSync("conductor.a.>")
	require.NoError(t, err)
	// a's admin, likewise, sees none of b's.
	ajs, err := jetstream.New(connect("a-root"))
	require.NoError(t, err)
	_, err = ajs.Stream(t.Context(), "conductor-b-jobs")
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
	asub, err := connect("a-root").SubscribeSync("conductor.b.>")
	require.NoError(t, err)

	submit("a", "a-web", 5) // jobs, states, events, ends and heartbeats of a …
	submit("b", "b-web", 6) // … and of b, while each spies on the other
	_, err = bsub.NextMsg(100 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "b's admin heard a's subjects")
	_, err = asub.NextMsg(100 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "a's admin heard b's subjects")
	info, err := spy.Info(t.Context())
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "b's stream took a's messages")

	// b's submitter reads b's job, not a's, though it knows a's id.
	bc, err := client.New(connect("b-web"), client.Config{Namespace: "b", Submitter: true})
	require.NoError(t, err)
	_, err = bc.Job(t.Context(), jb.ID)
	require.NoError(t, err)
	_, err = bc.Job(t.Context(), ja.ID)
	require.ErrorIs(t, err, client.ErrJobNotFound, "b's submitter read a's job")
	ac, err := client.New(connect("b-web"), client.Config{Namespace: "a", Submitter: true})
	require.NoError(t, err)
	_, err = ac.Job(t.Context(), ja.ID)
	require.ErrorIs(t, err, client.ErrForbidden, "b's submitter read a's job through a's conductord")
	_, err = client.New(connect("b-conductord"), client.Config{Namespace: "a"})
	require.Error(t, err, "b's admin opened a's state bucket")

	// Each conductor knows its own h1 only.
	require.Eventually(t, func() bool { return len(a.Workers()) == 1 && len(b.Workers()) == 1 }, 10*time.Second, 10*time.Millisecond)

	require.Equal(t, "h1", a.Workers()[0].Host)
	require.Equal(t, "h1", b.Workers()[0].Host)

	// b's credentials are not a's HTTP API's.
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL+"/v1/jobs/"+jb.ID, nil)
	req.Header.Set("Authorization", "Bearer "+tokens["b-web"])
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
}
