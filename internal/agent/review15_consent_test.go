package agent

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// TestReview15_UpgradeHealthCannotOutlastTheHostsWord: an upgrade's health
// period is the caller's, unbounded (HTTP takes any duration, the NATS
// command any number). An allowed upgrade (or one to the pool's running
// cmd, which consent always allows) with health=1000h holds the pool's
// command queue: the host's own reload that withdraws the consent cannot
// take effect, and the workers keep running the withdrawn command, as do
// every later drain, resize or shutdown.
func TestReview15_UpgradeHealthCannotOutlastTheHostsWord(t *testing.T) {
	t.Parallel()
	v2 := []string{"/bin/sh", "-c", "echo v2 $$; exec sleep 600"}
	web := service("web", 2, "v1")
	web.Upgrades = [][]string{v2}
	b := setupAgent(t, Config{Pools: []broker.Spec{web}})
	b.workers(t, "web", 2, nil)

	require.True(t, b.send(t, wire.Command{Op: "upgrade", Pool: "web", Cmd: v2, Health: wire.Duration(1000 * time.Hour)}).OK)
	b.workers(t, "web", 2, func(w wire.WorkerInfo) bool { return w.Version == 2 || w.Version == 1 })
	time.Sleep(time.Second) // the first v2 worker is up, in its health period

	// The operator withdraws v2 and reloads.
	web.Upgrades = nil
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := b.a.Reload(ctx, []broker.Spec{web})
	require.NoError(t, err, "the host's reload waits for the caller's 1000h health period")
}
