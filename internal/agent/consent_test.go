package agent

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// syncBuffer is a log destination tests read while the agent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestAgent_UpgradeNeedsConsent: an upgrade runs only a command the host's
// config allows (the pool's cmd or one of its upgrades); anything else is
// refused by the host, with the reason in the answer and the log, and is
// never run. A reload changes what is allowed.
func TestAgent_UpgradeNeedsConsent(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "pwned")
	evil := []string{"/bin/sh", "-c", "touch " + marker + "; exec sleep 600"}
	v2 := []string{"/bin/sh", "-c", "echo v2 $$; exec sleep 600"}
	web := service("web", 1, "v1")
	web.Upgrades = [][]string{v2}
	strict := service("strict", 1, "s1") // no upgrades: only its cmd
	var log syncBuffer
	b := setupAgent(t, Config{
		Pools:  []broker.Spec{web, strict},
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
	})
	b.workers(t, "web", 1, nil)
	b.workers(t, "strict", 1, nil)
	health := wire.Duration(50 * time.Millisecond)

	for _, tc := range []struct {
		pool string
		cmd  []string
		want string
	}{
		{"web", evil, `upgrade refused by host h1: command "/bin/sh -c 'touch ` + marker + `; exec sleep 600'" is not one this host allows for pool web (its config allows: "/bin/sh -c 'echo v1 $$; exec sleep 600'", "/bin/sh -c 'echo v2 $$; exec sleep 600'")`},
		{"web", nil, `upgrade refused by host h1: command "" is not one this host allows for pool web`},
		{"web", append(v2, "extra"), `is not one this host allows for pool web`},
		{"strict", v2, `upgrade refused by host h1: command "/bin/sh -c 'echo v2 $$; exec sleep 600'" is not one this host allows for pool strict (its config allows no command but its cmd "/bin/sh -c 'echo s1 $$; exec sleep 600'": list others under the pool's upgrades)`},
		{"strict", []string{strings.Repeat("x", 10000)}, `…" is not one this host allows`},
	} {
		r := b.send(t, wire.Command{Op: "upgrade", Pool: tc.pool, Cmd: tc.cmd, Health: health})
		require.False(t, r.OK, "%s %q", tc.pool, tc.cmd)
		require.Contains(t, r.Error, tc.want)
		require.Contains(t, log.String(), `msg="command refused" host=h1 op=upgrade pool=`+tc.pool)
		require.Less(t, len(r.Error), 1000, "the caller's command is cut in the answer")
	}
	require.Contains(t, log.String(), "is not one this host allows for pool web (its config allows:")

	// The allowed upgrade runs; so does one back to the config's cmd.
	require.True(t, b.send(t, wire.Command{Op: "upgrade", Pool: "web", Cmd: v2, Health: health}).OK)
	b.workers(t, "web", 1, func(w wire.WorkerInfo) bool { return w.Version == 2 })
	require.True(t, b.send(t, wire.Command{Op: "upgrade", Pool: "web", Cmd: web.Cmd, Health: health}).OK)
	b.workers(t, "web", 1, func(w wire.WorkerInfo) bool { return w.Version == 3 })
	// A pool with no list is still upgraded to its own cmd (a rolling restart).
	require.True(t, b.send(t, wire.Command{Op: "upgrade", Pool: "strict", Cmd: strict.Cmd, Health: health}).OK)

	// A reload is the host's own word: strict now allows v2, web nothing
	// but its cmd. Only the upgrades changed: no worker is replaced.
	strict.Upgrades = [][]string{v2}
	web.Upgrades = nil
	before := b.workers(t, "web", 1, func(w wire.WorkerInfo) bool { return w.Version == 3 })
	require.NoError(t, b.a.Reload(context.Background(), []broker.Spec{web, strict}))
	require.True(t, b.send(t, wire.Command{Op: "upgrade", Pool: "strict", Cmd: v2, Health: health}).OK)
	b.workers(t, "strict", 1, func(w wire.WorkerInfo) bool { return w.Version == 2 })
	r := b.send(t, wire.Command{Op: "upgrade", Pool: "web", Cmd: v2, Health: health})
	require.False(t, r.OK)
	require.Contains(t, r.Error, "its config allows no command but its cmd")
	after := b.workers(t, "web", 1, nil)
	require.Equal(t, before[0].PID, after[0].PID, "a reload of the upgrades alone replaces no worker")

	_, err := os.Stat(marker)
	require.ErrorIs(t, err, os.ErrNotExist, "the refused command never ran")
}

// TestAgent_MaxPoolSize: a resize, a pool or a reload above the host's
// maximum pool size is refused, and the pool keeps running as it was.
func TestAgent_MaxPoolSize(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	b := setupAgent(t, Config{
		Pools: []broker.Spec{service("web", 1, "v1")}, MaxPoolSize: 3,
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
	})
	first := b.workers(t, "web", 1, nil)

	for _, n := range []int{4, 1_000_000_000} {
		r := b.send(t, wire.Command{Op: "resize", Pool: "web", Count: n})
		require.False(t, r.OK)
		require.Contains(t, r.Error, "resize refused by host h1: count ")
		require.Contains(t, r.Error, " is more than this host's maximum pool size, 3 (workerd --max-pool-size)")
	}
	require.Contains(t, log.String(), `msg="command refused" host=h1 op=resize pool=web err="resize refused by host h1: count 1000000000 is more`)
	require.True(t, b.send(t, wire.Command{Op: "resize", Pool: "web", Count: 3}).OK)
	ws := b.workers(t, "web", 3, nil)
	require.Equal(t, first[0].PID, ws[0].PID)

	err := b.a.Reload(context.Background(), []broker.Spec{service("web", 4, "v1")})
	require.ErrorContains(t, err, `agent: pool "web": count 4 is more than this host's maximum pool size, 3 (workerd --max-pool-size)`)
	b.workers(t, "web", 3, func(w wire.WorkerInfo) bool { return w.Version == 1 })

	ns := natstest.Server(t)
	_, err = New(Config{Conn: natstest.Conn(t, ns), Host: "h2", Pools: []broker.Spec{service("big", DefaultMaxPoolSize+1, "x")}})
	require.ErrorContains(t, err, `agent: pool "big": count 257 is more than this host's maximum pool size, 256`)
}

// An upgrade's health period is the caller's: past maxUpgradeHealth it is
// refused, so that no caller holds a pool's commands (and the host's own
// reload) for longer.
func TestAgent_UpgradeHealthBounded(t *testing.T) {
	t.Parallel()
	v2 := []string{"/bin/sh", "-c", "echo v2 $$; exec sleep 600"}
	web := service("web", 1, "v1")
	web.Upgrades = [][]string{v2}
	b := setupAgent(t, Config{Pools: []broker.Spec{web}})
	b.workers(t, "web", 1, nil)

	ans := b.send(t, wire.Command{Op: "upgrade", Pool: "web", Cmd: v2, Health: wire.Duration(1000 * time.Hour)})
	require.False(t, ans.OK)
	require.Contains(t, ans.Error, "health 1000h0m0s is over this host's limit of 10m0s")
}
