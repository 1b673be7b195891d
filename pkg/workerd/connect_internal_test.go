package workerd

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The gate of the connection's callbacks passes records until closed,
// through the loggers derived from it too, and none after: nats.go may
// run a callback after Close, when Run's logger may be gone.
func TestLogGate_NothingAfterClose(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	g := newLogGate(slog.NewTextHandler(&buf, nil))
	log := slog.New(g)
	derived := log.With("pool", "p").WithGroup("g")
	log.Warn("before")
	derived.Warn("derived before")
	g.close()
	log.Warn("after")
	derived.Warn("derived after")
	out := buf.String()
	require.Contains(t, out, "msg=before")
	require.Contains(t, out, `msg="derived before" pool=p`)
	require.NotContains(t, out, "after")
	require.Equal(t, 2, strings.Count(out, "\n"))
}
