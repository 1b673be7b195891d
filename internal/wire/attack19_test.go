package wire

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Review 19: End.Archived is conductord's mark, never taken from the wire:
// a host that writes it in its ends (any spelling, either decoder) does
// not make conductord skip archiving a state.
func TestAttack19_EndArchivedNotFromTheWire(t *testing.T) {
	t.Parallel()
	for _, data := range []string{
		`{"type":"t","jobs":[{"id":"j","status":"succeeded","state":{"id":"j"},"archived":true}]}`,
		`{"type":"t","jobs":[{"id":"j","status":"succeeded","Archived":true,"state":{"id":"j"}}]}`,
		`{"jobs":[{"ARCHIVED":true,"id":"j","status":"succeeded","state":{"id":"j"}}],"type":"t"}`,
	} {
		e, err := DecodeEnds([]byte(data))
		require.NoError(t, err, data)
		require.Len(t, e.Jobs, 1, data)
		require.False(t, e.Jobs[0].Archived, data)
	}
	e := Ends{Type: "t", Jobs: []End{{ID: "j", Status: StatusSucceeded, State: []byte(`{"id":"j"}`), Archived: true}}}
	require.NotContains(t, string(e.AppendJSON(nil)), "rchived", "never written")
}
