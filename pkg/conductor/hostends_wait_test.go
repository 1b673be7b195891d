package conductor

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

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

// TestHostEnds_WaitAnsweredFromTheEnd: a host on a credential of its own
// stores a job's final state through conductord's store, which archives
// it as it writes it, and announces its end. The submission waiting for
// the job is answered with that state, read from neither the bucket nor
// the archive, and the ends taker does not archive it a second time.
func TestHostEnds_WaitAnsweredFromTheEnd(t *testing.T) {
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
	taken := make(chan []string, 10)
	c.onEnds = func(ended []string) { taken <- ended }
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	connect := func(id string) *nats.Conn {
		nc, err := nats.Connect(c.NATSURL(), client.WithToken(tokens[id]))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	root, h1 := connect("root"), connect("h1")
	// Every read of a job state, in the bucket or the archive, as the
	// server is asked it: each comes to the spy before it is answered.
	spy := connect("root")
	reads, err := spy.SubscribeSync("$JS.API.DIRECT.GET.*." + subject.KV(c.space.StateBucket(), ">"))
	require.NoError(t, err)
	archiveReads, err := spy.SubscribeSync(c.space.ArchiveGet())
	require.NoError(t, err)
	require.NoError(t, spy.Flush())
	jobs, err := root.SubscribeSync(c.space.JobAt("squares", ""))
	require.NoError(t, err)
	require.NoError(t, root.Flush())

	answers := make(chan *nats.Msg, 1)
	go func() {
		m := nats.NewMsg(c.space.Submit("squares"))
		m.Header.Set(names.HeaderWait, "10s")
		m.Data = []byte("3")
		a, err := root.RequestMsg(m, 15*time.Second)
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

	// h1 ends the job as workerd does: its final state through the store,
	// then its end.
	final, err := json.Marshal(wire.Job{ID: id, Type: "squares", Status: wire.StatusSucceeded, Attempts: 1, Result: json.RawMessage("9")})
	require.NoError(t, err)
	_, err = hostsvc.NewCaller(h1, c.space).Store(t.Context(), "squares", wire.StoreItem{Op: wire.StoreState, Key: id, Rev: rev, Data: final})
	require.NoError(t, err)
	archivedBytes := c.archive.store.Stats().Bytes
	hjs, err := jetstream.New(h1)
	require.NoError(t, err)
	ends := wire.Ends{Type: "squares", Jobs: []wire.End{{ID: id, Status: wire.StatusSucceeded, State: final}}}
	_, err = hjs.Publish(t.Context(), c.space.JobEnds("squares"), ends.AppendJSON(nil))
	require.NoError(t, err)

	var a *nats.Msg
	select {
	case a = <-answers:
	case <-time.After(20 * time.Second):
		t.Fatal("no answer")
	}
	require.NotNil(t, a)
	require.Equal(t, "200", a.Header.Get(names.HeaderStatus), "%s", a.Data)
	var j wire.Job
	require.NoError(t, json.Unmarshal(a.Data, &j))
	require.Equal(t, id, j.ID)
	require.JSONEq(t, "9", string(j.Result))
	require.NoError(t, spy.Flush())
	n, _, err := reads.Pending()
	require.NoError(t, err)
	require.Zero(t, n, "the job's state was read from the bucket")
	n, _, err = archiveReads.Pending()
	require.NoError(t, err)
	require.Zero(t, n, "the job's state was read from the archive")

	select {
	case ended := <-taken:
		require.Equal(t, []string{id}, ended)
	case <-time.After(10 * time.Second):
		t.Fatal("the ends were not taken")
	}
	require.Equal(t, archivedBytes, c.archive.store.Stats().Bytes, "the state the store archived was archived again from its end")
}
