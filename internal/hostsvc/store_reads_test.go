package hostsvc

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// TestStore_ReplacedRevisionReadsNoOtherKey: a host of sq names, as the
// revision its writes replace, the revision of another type's large state
// (900 KB). The store reads the revision by the key's subject only
// ($KV.<bucket>.<key>), finds nothing of the key there, and fails the
// writes (the key is not at that revision) without reading the other
// state.
func TestStore_ReplacedRevisionReadsNoOtherKey(t *testing.T) {
	t.Parallel()
	b, storeNC := setupStoreConn(t)
	big, _ := json.Marshal(map[string]any{"id": "o-big", "type": "other", "status": "succeeded", "result": strings.Repeat("x", 900<<10)})
	rev, err := b.states.Put(t.Context(), "o-big", big)
	require.NoError(t, err)

	const n = 64
	var batch []byte
	for i := range n {
		id := fmt.Sprintf("mine-%d", i)
		batch = wire.AppendStoreItem(batch, wire.StoreItem{Op: wire.StoreState, Key: id, Rev: rev, Data: stateOf(id, "sq", wire.StatusRunning)})
	}
	before := storeNC.Stats().InBytes
	m, err := b.nc.Request(b.sp.StoreAs("h1", "sq"), batch, waitLimit)
	require.NoError(t, err)
	rs, err := ParseStoreAnswer(m, n)
	require.NoError(t, err)
	for _, r := range rs {
		require.Error(t, ResultError(r), "a write over another key's revision fails (a conflict: the key is not at it)")
	}
	read := storeNC.Stats().InBytes - before
	t.Logf("request of %d bytes; the store read %d bytes", len(batch), read)
	require.Less(t, read, uint64(4<<20), "a host's request made conductord read another type's big state once per item")
}

// TestStore_DeadEntriesReadLittle: a host's dead entries naming another
// type's job (with a state of its own type naming it) are refused, and a
// request reads the state of at most a few such jobs (those whose dead
// state the store did not write since it started): not one large state
// per item.
func TestStore_DeadEntriesReadLittle(t *testing.T) {
	t.Parallel()
	b, storeNC := setupStoreConn(t)
	big, _ := json.Marshal(map[string]any{"id": "o-big", "type": "other", "status": "dead", "result": strings.Repeat("x", 900<<10)})
	_, err := b.states.Put(t.Context(), "o-big", big)
	require.NoError(t, err)

	const n = 64
	var batch []byte
	for range n {
		batch = wire.AppendStoreItem(batch, wire.StoreItem{Op: wire.StoreDead, Key: "o-big", Data: stateOf("o-big", "sq", wire.StatusDead)})
	}
	before := storeNC.Stats().InBytes
	m, err := b.nc.Request(b.sp.StoreAs("h1", "sq"), batch, waitLimit)
	require.NoError(t, err)
	rs, err := ParseStoreAnswer(m, n)
	require.NoError(t, err)
	for _, r := range rs {
		require.ErrorContains(t, ResultError(r), "refused")
	}
	read := storeNC.Stats().InBytes - before
	t.Logf("request of %d bytes; the store read %d bytes", len(batch), read)
	require.Less(t, read, uint64(4<<20), "a host's dead entries made conductord read another type's big state once per item")
}

// setupStoreConn is setup with the store on a connection of its own,
// returned: its stats tell what the store read.
func setupStoreConn(t *testing.T) (*bundle, *nats.Conn) {
	t.Helper()
	var storeNC *nats.Conn
	b := setupWith(t, func(c *Config) {
		nc, err := nats.Connect(c.Conn.ConnectedUrl())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		c.StoreConn, storeNC = nc, nc
	})
	return b, storeNC
}
