package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestGroup_HugeCPUIsNotTheLeastQuota: a cpu limit far above the machine
// (1e14 CPUs, 1e300) does not become the kernel's least quota (1 ms per
// 100 ms) through an overflow of cpus*cpuPeriod: it is capped at MaxCPU.
func TestGroup_HugeCPUIsNotTheLeastQuota(t *testing.T) {
	for name, l := range layouts(t) {
		t.Run(name, func(t *testing.T) {
			h := openHost(t, l, "cgtest-cpu-"+name)
			if !h.Has(CPU) {
				t.Skip("no cpu controller")
			}
			g, err := h.NewGroup("pool-1")
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, g.Remove()) })
			cpu, _ := g.hier(CPU)
			for _, c := range []float64{1e14, 1e300} {
				err := g.SetLimits(Limits{CPU: c})
				file := "cpu.cfs_quota_us"
				if cpu.v2 {
					file = "cpu.max"
				}
				b, rerr := os.ReadFile(filepath.Join(cpu.dir, file))
				require.NoError(t, rerr)
				got := strings.Fields(string(b))[0]
				// Either refused, or no lower than the machine's CPUs.
				if err == nil {
					require.NotEqual(t, "1000", got, "cpu=%g set the least quota: the pool gets 0.01 CPU", c)
				}
			}
		})
	}
}

// envSweepPrefix: with it set, the test binary opens a Host with that
// prefix (sweeping), prints how many processes it swept and exits.
const envSweepPrefix = "CGTEST_SWEEP_PREFIX"

func init() {
	prefix := os.Getenv(envSweepPrefix)
	if prefix == "" {
		return
	}
	l, err := ReadLayout()
	if err != nil {
		fmt.Println("layout:", err)
		os.Exit(2)
	}
	h, swept, err := Open(l, prefix)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	_ = h.Close()
	fmt.Printf("pid %d swept %d subtrees\n", os.Getpid(), len(swept))
	os.Exit(0)
}

// TestOpen_SweepSparesLiveSupervisorInOtherPidNamespace: a supervisor
// started in a pid namespace of its own (a container or a sandbox that
// shares the host's cgroups) cannot see the live supervisor's pid, but
// finds its subtree locked, and leaves it and its workers alone.
func TestOpen_SweepSparesLiveSupervisorInOtherPidNamespace(t *testing.T) {
	l := realLayout(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1)")
	}
	const prefix = "cgtest-pidns"
	h := openHost(t, l, prefix)
	g, err := h.NewGroup("pool-1")
	require.NoError(t, err)
	lf, err := g.NewLeaf("0-1", 0)
	require.NoError(t, err)
	worker, _ := startIn(t, lf, "exec sleep 1000")
	require.Contains(t, lf.Procs(), worker.Process.Pid)

	// A second supervisor, same cgroups, in a new pid namespace.
	cmd := exec.Command(unshare, "--pid", "--fork", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envSweepPrefix+"="+prefix)
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "unshare failed") {
		t.Skipf("cannot make a pid namespace: %s", out)
	}
	require.NoError(t, err, "%s", out)
	t.Logf("the other supervisor: %s", strings.TrimSpace(string(out)))

	// The other's sweep had ended when it exited: a SIGKILL it sent would
	// end the worker within moments.
	require.Never(t, func() bool { return !running(worker.Process.Pid) }, 500*time.Millisecond, 10*time.Millisecond,
		"the live supervisor's worker was killed by the other's sweep; its subtree %s gone: %v", h.hiers[0].dir, !exists(h.hiers[0].dir))
	require.Contains(t, lf.Procs(), worker.Process.Pid)
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }
