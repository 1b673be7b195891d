package wire

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
)

func TestMessageJobID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		jobID, msgID string
		want         string
	}{
		{"job id header", "j1", "m1", "j1"},
		{"msg id when no job id", "", "m1", "m1"},
		{"msg id when the job id is no token", "a.b", "m1", "m1"},
		{"sequence when neither", "", "", "seq-42"},
		{"sequence when neither is a token", "a b", "c*d", "seq-42"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			if tc.jobID != "" {
				h.Set(names.HeaderJobID, tc.jobID)
			}
			if tc.msgID != "" {
				h.Set(names.HeaderMsgID, tc.msgID)
			}
			require.Equal(t, tc.want, MessageJobID(h, 42))
		})
	}
}
