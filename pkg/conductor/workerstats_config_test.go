package conductor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/conductor"
)

// Found by an outside review: a negative StatsInterval (--stats-interval -5s) is not
// refused, as a negative StrayCheck or StorageCheck is: cmp.Or keeps it,
// and Start's stats goroutine calls time.NewTicker with it, which panics
// in a goroutine of its own: conductord crashes just after it started.
// (The test does not call Start, which would crash the test binary.)
func TestStatsInterval_NegativeRefused(t *testing.T) {
	t.Parallel()
	_, err := conductor.New(conductor.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", StatsInterval: -5 * time.Second})
	require.Error(t, err, "a negative stats interval must be refused: Start would panic in time.NewTicker")
}
