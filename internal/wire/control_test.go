package wire_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

func TestCheckCommandFields(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		op      string
		set     []string
		wantErr string
	}{
		{op: "drain"},
		{op: "drain", set: []string{"timeout"}},
		{op: "resize", set: []string{"count"}},
		{op: "upgrade", set: []string{"cmd", "health"}},
		{op: "resize", set: []string{"count", "cmd"}, wantErr: "resize takes no cmd (it takes count)"},
		{op: "resume", set: []string{"timeout"}, wantErr: "resume takes no timeout (it takes no fields)"},
	} {
		err := wire.CheckCommandFields(tc.op, tc.set)
		if tc.wantErr == "" {
			require.NoError(t, err, "%s %v", tc.op, tc.set)
		} else {
			require.EqualError(t, err, tc.wantErr)
		}
	}
}
