package broker

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
