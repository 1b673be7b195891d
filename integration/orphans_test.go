package integration

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// gone reports whether no process has pid (a zombie counts as gone only
// once reaped, which init does for orphans).
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestWorkerd_LeavesNoProcess(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			c := newCluster(t)
			w := c.workerd("host-a", squares(3))
			c.waitWorkers("squares", 3)
			var pids []int
			for _, wk := range c.workers() {
				pids = append(pids, wk.PID)
			}
			require.Len(t, pids, 3)

			require.NoError(t, w.cmd.Process.Signal(sig))
			select {
			case <-w.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("workerd did not exit on %s", sig)
			}
			// SIGTERM: workerd stops its workers; SIGKILL: their parent-death
			// signal and the closed channel do.
			require.Eventually(t, func() bool {
				for _, pid := range pids {
					if !gone(pid) {
						return false
					}
				}
				return true
			}, 10*time.Second, 10*time.Millisecond, "workers %v outlived workerd's %s", pids, sig)
		})
	}
}
