package conductor_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
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
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestHostEnds_HonestEndTakenLateIsArchived: an honest host of squares
// writes a job's final state through the store, with its time to live
// (--archive-after), and announces it in its ends; conductord restarts,
// and the state leaves the bucket before the ends are taken. The store
// archived the state as it wrote it: it is there, whenever (or if ever)
// its end comes.
func TestHostEnds_HonestEndTakenLateIsArchived(t *testing.T) {
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
	start := func() *conductor.Conductor {
		c, err := conductor.New(conductor.Config{
			DataDir: dir, NATSListen: "127.0.0.1:0", Credentials: creds, CredentialsCheck: 20 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
		require.NoError(t, err)
		require.NoError(t, c.Start(context.Background()))
		return c
	}
	connect := func(c *conductor.Conductor, id string) *nats.Conn {
		nc, err := nats.Connect(c.NATSURL(), client.WithToken(tokens[id]), nats.MaxReconnects(0))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}

	c1 := start()
	root := connect(c1, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	id, err := rootc.Submit(t.Context(), "squares", 3)
	require.NoError(t, err)
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	states, err := rjs.KeyValue(t.Context(), "conductor-default-state")
	require.NoError(t, err)
	e, err := states.Get(t.Context(), id)
	require.NoError(t, err)

	// h1 ends the job as workerd does: its final state through the
	// store, with a short time to live.
	h1 := connect(c1, "h1")
	sp, _ := subject.New("default")
	now := time.Now().UTC().Format(time.RFC3339Nano)
	final, _ := json.Marshal(map[string]any{"id": id, "type": "squares", "status": "succeeded", "attempts": 1, "result": 9,
		"created_at": now, "updated_at": now})
	_, err = hostsvc.NewCaller(h1, sp).Store(t.Context(), "squares",
		wire.StoreItem{Op: wire.StoreState, Key: id, Rev: e.Revision(), TTL: 2 * time.Second, Data: final})
	require.NoError(t, err)

	// conductord restarts.
	c1.Stop()
	c2 := start()
	t.Cleanup(c2.Stop)
	root = connect(c2, "root")
	rjs, err = jetstream.New(root)
	require.NoError(t, err)
	states, err = rjs.KeyValue(t.Context(), "conductor-default-state")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := states.Get(t.Context(), id)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, 20*time.Second, 50*time.Millisecond, "the final state leaves the bucket")

	// The ends, taken now.
	h1 = connect(c2, "h1")
	hjs, err := jetstream.New(h1)
	require.NoError(t, err)
	ends := `{"type":"squares","jobs":[{"id":"` + id + `","status":"succeeded","state":` + string(final) + `}]}`
	_, err = hjs.Publish(t.Context(), "conductor.default.ends.squares", []byte(ends))
	require.NoError(t, err)
	archived := func() bool {
		r, err := root.Request("conductor.default.archive.get", []byte(id), 5*time.Second)
		return err == nil && r.Header.Get(names.HeaderStatus) == "" && len(r.Data) > 0
	}
	require.Eventually(t, archived, 15*time.Second, 50*time.Millisecond,
		"an honest host's final state, its ends taken after it left the bucket, was dropped: lost for good")
}
