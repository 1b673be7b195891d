package broker

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/cgroup"
)

func TestProcStat(t *testing.T) {
	t.Parallel()
	rss, _ := procStat(os.Getpid())
	require.Greater(t, rss, int64(1<<20), "a Go test binary holds more than 1 MiB")
	require.Eventually(t, func() bool {
		for end := time.Now().Add(time.Millisecond); time.Now().Before(end); {
		} // spend some CPU
		_, cpu := procStat(os.Getpid())
		return cpu > 0
	}, 10*time.Second, time.Millisecond)
	rss, cpu := procStat(-1)
	require.Zero(t, rss)
	require.Zero(t, cpu)
	rss, _ = procStat(1 << 30) // no such process
	require.Zero(t, rss)
}

func TestOOMKills(t *testing.T) {
	t.Parallel()
	require.GreaterOrEqual(t, oomKills(), int64(0), "%s has no oom_kill line", vmstatPath)
}

func TestCounter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want int64
	}{
		{"vmstat", "pgfault 12\noom_kill 3\nnuma_hit 9\n", 3},
		{"memory.events", "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n", 2},
		{"first line, no newline", "oom_kill 41", 41},
		{"a longer key only", "oom_group_kill 5\n", -1},
		{"missing", "pgfault 12\n", -1},
		{"not a number", "oom_kill many\n", -1},
		{"empty", "", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, cgroup.Counter([]byte(tc.in), "oom_kill"))
		})
	}
}
