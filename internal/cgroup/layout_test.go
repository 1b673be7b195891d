package cgroup

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseLayout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		cgroup     string
		mountinfo  string
		want       Layout
		wantErrNil bool
	}{
		{
			name:   "hybrid",
			cgroup: "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/process_api/be11\n1:cpu:/\n0::/\n",
			mountinfo: "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n" +
				"32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n" +
				"35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n" +
				"37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n" +
				"39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n" +
				"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
			want: Layout{Unified: "/sys/fs/cgroup/unified", UnifiedRoot: true, V1: map[string]string{
				CPU: "/sys/fs/cgroup/cpu", Memory: "/sys/fs/cgroup/memory/process_api/be11",
				Freezer: "/sys/fs/cgroup/freezer", Pids: "/sys/fs/cgroup/pids",
			}},
		},
		{
			name:      "v2 only, delegated service",
			cgroup:    "0::/system.slice/workerd.service\n",
			mountinfo: "25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
			want:      Layout{Unified: "/sys/fs/cgroup/system.slice/workerd.service", V1: map[string]string{}},
		},
		{
			name:      "v2 in a container, own namespace",
			cgroup:    "0::/\n",
			mountinfo: "700 690 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n",
			want:      Layout{Unified: "/sys/fs/cgroup", UnifiedRoot: true, V1: map[string]string{}},
		},
		{
			name:      "v2 bind-mounted from a subtree",
			cgroup:    "0::/docker/abc/sub\n",
			mountinfo: "700 690 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup rw\n",
			want:      Layout{Unified: "/sys/fs/cgroup/sub", V1: map[string]string{}},
		},
		{
			name:   "v1 only, cpu and cpuacct together",
			cgroup: "5:cpu,cpuacct:/a\n4:memory:/a\n3:pids:/a\n",
			mountinfo: "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n" +
				"35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
				"36 31 0:33 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
			want: Layout{V1: map[string]string{
				CPU: "/sys/fs/cgroup/cpu,cpuacct/a", Memory: "/sys/fs/cgroup/memory/a", Pids: "/sys/fs/cgroup/pids/a",
			}},
		},
		{
			name:      "escaped mount point",
			cgroup:    "0::/x\n",
			mountinfo: `41 31 0:38 / /mnt/cg\040two rw - cgroup2 cgroup2 rw` + "\n",
			want:      Layout{Unified: "/mnt/cg two/x", V1: map[string]string{}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseLayout([]byte(tc.cgroup), []byte(tc.mountinfo))
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	t.Run("none", func(t *testing.T) {
		t.Parallel()
		_, err := ParseLayout([]byte("0::/\n"), []byte("31 23 0:28 / /sys rw - sysfs sysfs rw\n"))
		require.ErrorIs(t, err, ErrNoCgroups)
	})
}

func TestCounter(t *testing.T) {
	t.Parallel()
	b := []byte("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\npopulated 1\n")
	require.Equal(t, int64(2), Counter(b, "oom_kill"))
	require.Equal(t, int64(1), Counter(b, "populated"))
	require.Equal(t, int64(-1), Counter(b, "frozen"))
	require.Equal(t, int64(-1), Counter([]byte("oom_kill x"), "oom_kill"))
}
