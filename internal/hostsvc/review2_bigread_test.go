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

// TestReview2_ReplacedRevisionReadsAnotherTypesBigState: a host of sq
// names, as the revision its writes replace, the revision of another
// type's large state (900 KB). checkReplaced reads the state bucket's
// message at that revision whole (stream.GetMsg with no subject), and
// only then sees it is not the key's: each item of the request costs
// conductord a read of another type's big state, 512 a request, 20,000
// a second a credential, for a few hundred bytes sent. This is the read
// of other types' big messages the first review's fix removed from
// checkJob (which reads by its type's subjects only). Expected: the
// writes are refused without reading the other type's state (a read by
// the key's subject, $KV.<bucket>.<key>, finds nothing at that
// revision).
func TestReview2_ReplacedRevisionReadsAnotherTypesBigState(t *testing.T) {
	t.Parallel()
	var storeNC *nats.Conn
	b := setupWith(t, func(c *Config) {
		nc, err := nats.Connect(c.Conn.ConnectedUrl())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		c.StoreConn, storeNC = nc, nc
	})
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
		require.ErrorContains(t, ResultError(r), "refused")
	}
	read := storeNC.Stats().InBytes - before
	t.Logf("request of %d bytes; the store read %d bytes", len(batch), read)
	require.Less(t, read, uint64(4<<20), "a host's request made conductord read another type's big state once per item")
}

// TestReview2_DeadEntryReadsAnotherTypesBigState: the same through dead
// entries: an item indexing job o-big (another type's) as dead, with a
// state of sq naming it, passes the first check (the state written names
// the key and h1's type) and has the store Get o-big's whole state, once
// per item, before it refuses it. Expected: refused without reading it
// whole (or read once a request).
func TestReview2_DeadEntryReadsAnotherTypesBigState(t *testing.T) {
	t.Parallel()
	var storeNC *nats.Conn
	b := setupWith(t, func(c *Config) {
		nc, err := nats.Connect(c.Conn.ConnectedUrl())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		c.StoreConn, storeNC = nc, nc
	})
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
