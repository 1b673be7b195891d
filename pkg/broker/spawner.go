package broker

import (
	"fmt"
	"os/exec"
	"runtime"
	"sync"

	"github.com/conductor-run/conductor/internal/cgroup"
)

// A spawner starts processes from one OS thread that stays alive while any
// of them may run.
//
// Worker processes are started with Pdeathsig (SIGKILL) as a backstop
// against orphans if workerd dies without cleaning up. Linux sends that
// signal when the thread that forked the child exits, not the process
// (golang/go#27505), and the Go runtime may end idle threads. So every fork
// happens on a goroutine locked to its thread that never unlocks.
//
// There is one spawner per process, started by the first running pool and
// ended by the last one to stop (after every process of it was reaped): the
// locked goroutine returning ends its thread, which is then safe.
//
// It is not a startstop.Service: it is shared by every running pool and
// reference-counted, not owned by one. acquireSpawner starts its goroutine
// (loop, which owns the thread); the last releaseSpawner closes reqs,
// which ends it. spawners.mu guards spawners; a spawner has no other state.
type spawner struct {
	reqs chan spawnReq
}

type spawnReq struct {
	cmd   *exec.Cmd
	leaf  *cgroup.Leaf // the cgroup the process is born in; nil: none
	reply chan<- spawnReply
}

type spawnReply struct {
	err      error // from cmd.Start
	leaveErr error // the thread could not go back to its own cgroups
}

// spawners counts the pools using the current spawner.
var spawners struct {
	mu   sync.Mutex
	refs int
	cur  *spawner
}

// acquireSpawner returns the running spawner, starting one if needed. Each
// call must be paired with one releaseSpawner once no process started
// through it is alive.
func acquireSpawner() *spawner {
	spawners.mu.Lock()
	defer spawners.mu.Unlock()
	if spawners.refs == 0 {
		spawners.cur = &spawner{reqs: make(chan spawnReq)}
		go spawners.cur.loop()
	}
	spawners.refs++
	return spawners.cur
}

// releaseSpawner undoes one acquireSpawner; the last release ends the
// spawner's goroutine and thread.
func releaseSpawner() {
	spawners.mu.Lock()
	defer spawners.mu.Unlock()
	spawners.refs--
	if spawners.refs == 0 {
		close(spawners.cur.reqs)
		spawners.cur = nil
	}
}

func (s *spawner) loop() {
	// Never unlocked: the thread must not be reused or ended while children
	// forked from it live. Returning ends it.
	runtime.LockOSThread()
	tid := threadID()
	for req := range s.reqs {
		req.reply <- spawn(req, tid)
	}
}

// spawn starts req.cmd from the thread tid. A process with a leaf is born
// in it: in its cgroup2 directory through the Cmd's CgroupFD (clone3
// CLONE_INTO_CGROUP), in its v1 cgroups by forking while the thread is in
// them (v1 moves single threads), so that no process of it ever runs
// outside the leaf.
func spawn(req spawnReq, tid int) spawnReply {
	if req.leaf == nil {
		return spawnReply{err: req.cmd.Start()}
	}
	if err := req.leaf.EnterThread(tid); err != nil {
		return spawnReply{err: fmt.Errorf("enter cgroup: %w", err), leaveErr: req.leaf.LeaveThread(tid)}
	}
	err := req.cmd.Start()
	return spawnReply{err: err, leaveErr: req.leaf.LeaveThread(tid)}
}

// start calls cmd.Start on the spawner's thread, the process born in leaf
// if it is not nil.
func (s *spawner) start(cmd *exec.Cmd, leaf *cgroup.Leaf) spawnReply {
	reply := make(chan spawnReply, 1)
	s.reqs <- spawnReq{cmd: cmd, leaf: leaf, reply: reply}
	return <-reply
}
