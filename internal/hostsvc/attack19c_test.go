package hostsvc

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// TestAttack19c_PriorityMadeAtStartLeasesAsLongAsNormal: host A serves
// sq with a 10 minute ack wait (its leases are extended every 3m20s). A
// high job comes, and before conductord's leader makes its consumer (a
// second), host B starts with a 30s ack wait: its MakeConsumers made the
// high consumer with its own 30s, not the type's 10 minutes, and the
// leader then found it made. A's high jobs were then delivered again
// to another worker 30s into their run. Every consumer of a type must
// lease for at least what any host of it asked (MakePriority's rule).
func TestAttack19c_PriorityMadeAtStartLeasesAsLongAsNormal(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	require.NoError(t, MakeConsumers(ctx, b.js, b.sp, "sq", 10*time.Minute)) // host A
	_, err := b.js.Publish(ctx, b.sp.JobAt("sq", "high"), []byte("1"))
	require.NoError(t, err)
	require.NoError(t, MakeConsumers(ctx, b.js, b.sp, "sq", 30*time.Second)) // host B
	for _, p := range []wire.Priority{wire.PriorityNormal, wire.PriorityHigh} {
		c, err := b.js.Consumer(ctx, b.sp.JobStream(), b.sp.ConsumerAt("sq", string(p)))
		require.NoError(t, err)
		require.Equal(t, 10*time.Minute, c.CachedInfo().Config.AckWait, "%s: leases for less than host A asked", p)
	}
}
