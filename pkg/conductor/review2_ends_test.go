package conductor_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/pkg/client"
)

// reviewEndsAttack is how many forged ends one attack message carries.
const reviewEndsAttack = 400

// TestReview2_ForgedEndsStallTheEndsTaker: a host of squares publishes
// one small ends message (some 60 KB) whose ends each name a job of
// another type with a large final state (1 MiB, a result of that type's
// host) and carry a made-up "squares" state of that id. CheckEnd finds
// no such final in finals and reads the job's whole state from the
// store, then decodes it (sameEnd), for every end, one after another, in
// the single goroutine that takes every host's ends: ~400 MiB read and
// decoded for 40 KB sent (another type's big state read for nothing, the
// kind of read the store's checks were fixed not to make), while every
// other host's ends (archive, counts, batches, Client.Wait) wait behind.
// Nothing bounds the ends a message carries or the store reads a
// credential's ends cost. Expected: an honest job ending after the attack
// is archived within a few seconds, as it is without it.
func TestReview2_ForgedEndsStallTheEndsTaker(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	root, _ := rc.connectAs(t, "root")
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	states, err := rjs.KeyValue(t.Context(), "conductor-default-state")
	require.NoError(t, err)
	// Another type's job with a large result, as its host stored it.
	victim := uuid.NewString()
	big, _ := json.Marshal(map[string]any{"id": victim, "type": "other", "status": "succeeded", "attempts": 1,
		"result": strings.Repeat("x", 1<<20)})
	_, err = states.Put(t.Context(), victim, big)
	require.NoError(t, err)

	h1, e := rc.connectAs(t, "h1")
	js, err := jetstream.New(h1)
	require.NoError(t, err)
	forged := `{"id":"` + victim + `","status":"succeeded","state":{"id":"` + victim + `","type":"squares","status":"succeeded"}}`
	var b strings.Builder
	b.WriteString(`{"type":"squares","jobs":[`)
	for i := range reviewEndsAttack {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(forged)
	}
	b.WriteString(`]}`)
	t.Logf("attack message: %d bytes", b.Len())
	_, err = js.Publish(t.Context(), "conductor.default.ends.squares", []byte(b.String()))
	require.NoError(t, err)

	// An honest job of h1's, ending after the attack.
	startHost(t, rc, "h1", "squares")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	start := time.Now()
	honest, err := rootc.Submit(t.Context(), "squares", 3)
	require.NoError(t, err)
	archived := func(id string) bool {
		r, err := root.Request("conductor.default.archive.get", []byte(id), 5*time.Second)
		return err == nil && r.Header.Get(names.HeaderStatus) == "" && len(r.Data) > 0
	}
	ok := false
	for !ok && time.Since(start) < 120*time.Second {
		ok = archived(honest)
		if !ok {
			time.Sleep(50 * time.Millisecond) // polling the archive, as TestRoles_HostEndsOnlyItsTypes does
		}
	}
	took := time.Since(start)
	t.Logf("honest job archived after %v (archived: %v)", took, ok)
	require.True(t, ok)
	require.Less(t, took, 10*time.Second, "one host's forged ends held every host's ends up")
	require.Empty(t, e.list)
}
