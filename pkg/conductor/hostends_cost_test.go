package conductor_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// forgedEndsAttack is how many forged ends one attack message carries.
const forgedEndsAttack = 400

// TestHostEnds_ForgedEndsCostNoRead: a host of squares publishes one
// small ends message whose ends each name a job of another type with a
// large final state and carry a made-up "squares" state of that id.
// conductord reads nothing of the store for a host's ends (the store
// archived what it wrote, and remembers it): the forged states are not
// archived, and an honest job's end that comes after them is counted at
// once, the one goroutine that takes every host's ends not held up.
func TestHostEnds_ForgedEndsCostNoRead(t *testing.T) {
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
	for i := range forgedEndsAttack {
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
	_, err = rootc.Submit(t.Context(), "squares", 3)
	require.NoError(t, err)
	// The ends are taken in order: once the honest end is counted, the
	// forged ones were taken before it.
	require.Eventually(t, func() bool { return conductor.Succeeded(rc.c, "squares") >= 1 }, 30*time.Second, 20*time.Millisecond,
		"the honest job's end was never counted")
	took := time.Since(start)
	t.Logf("honest job counted after %v", took)
	require.Less(t, took, 10*time.Second, "one host's forged ends held every host's ends up")
	r, err := root.Request("conductor.default.archive.get", []byte(victim), 5*time.Second)
	require.NoError(t, err)
	var got struct{ Type string }
	if len(r.Data) > 0 { // the victim has no end: nothing archived, or not the forged state
		require.NoError(t, json.Unmarshal(r.Data, &got))
	}
	require.NotEqual(t, "squares", got.Type, "a forged state was archived")
	require.Empty(t, e.list)
}
