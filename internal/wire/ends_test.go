package wire

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEnds_AppendJSON(t *testing.T) {
	for _, e := range []Ends{
		{Type: "noop", Jobs: []End{}},
		{Type: "noop", Jobs: []End{{ID: "j1", Status: StatusSucceeded}}},
		{Type: "sq", Jobs: []End{{ID: "j1", Status: StatusSucceeded, Batch: "b1"}, {ID: "seq-7", Status: StatusFailed}, {ID: `odd"<id>`, Status: StatusDead, Batch: "b\u00e9"}}},
	} {
		want, err := json.Marshal(&e)
		require.NoError(t, err)
		got := e.AppendJSON([]byte("x"))
		require.Equal(t, "x"+string(want), string(got))
		var back Ends
		require.NoError(t, json.Unmarshal(got[1:], &back))
		require.Equal(t, e, back)
	}
}
