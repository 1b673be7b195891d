// Package cgroup contains the worker processes of workerd's pools in Linux
// control groups: a subtree per supervising process, a group per pool
// (its cpu and pids limits) and a leaf per worker process (its memory
// limit). A leaf is killed as a whole, whatever sessions or process groups
// its processes made, and counts its own OOM kills.
//
// It handles the three layouts a Linux host may have:
//
//   - cgroup v2 only: the groups are made under this process's own cgroup
//     (the "0::" line of /proc/self/cgroup), with the controllers that cgroup
//     was given; a process is born in its leaf (clone3 CLONE_INTO_CGROUP).
//   - hybrid: a cgroup2 hierarchy without controllers (membership and
//     cgroup.kill) beside cgroup v1 hierarchies with the controllers
//     (limits).
//   - cgroup v1 only: the v1 hierarchies alone; a leaf is killed by freezing
//     it (the freezer controller) and killing every process it lists, until
//     it lists none.
//
// For v1 hierarchies, the thread that forks a worker is moved into the
// worker's leaves just before the fork and back right after (v1 lets a
// single thread move), so the process is born in them too: no process of
// a worker ever runs outside its leaves.
//
// Read the layout with ReadLayout, open a Host once per supervising
// process, make a Group per pool and a Leaf per process. Nothing here
// starts a goroutine.
package cgroup
