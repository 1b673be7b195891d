package broker

import (
	"os/exec"
	"testing"
)

// TestSpawner_NotFromTheMainThread: a spawner that starts on the
// process's main thread serves from another one: the main thread leads
// the thread group, and in a worker's v1 memory cgroup it would take the
// whole process's memory charges with it (the kernel OOM-killed a test
// binary for that).
func TestSpawner_NotFromTheMainThread(t *testing.T) {
	// Pretend the thread the spawner starts on is the main thread.
	started := make(chan int, 1)
	leaderTID = func() int {
		tid := threadID()
		started <- tid
		return tid
	}
	t.Cleanup(func() { leaderTID = defaultLeaderTID })
	s := &spawner{reqs: make(chan spawnReq)}
	go s.loop()
	defer close(s.reqs)
	cmd := exec.Command("true")
	if reply := s.start(cmd, nil); reply.err != nil {
		t.Fatal(reply.err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	first := <-started
	if got := int(s.tid.Load()); got == first || got == 0 {
		t.Fatalf("the spawner serves from thread %d, the one it started on (%d), which it takes for the main thread", got, first)
	}
}
