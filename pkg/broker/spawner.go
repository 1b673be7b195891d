package broker

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"

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
	tid  atomic.Int64 // the thread it serves from, once it does
}

// leaderTID is the id of the thread that leads this process's thread
// group: its main thread. A variable for a test to pretend.
var leaderTID = defaultLeaderTID

func defaultLeaderTID() int { return os.Getpid() }

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
	if threadID() == leaderTID() {
		// This is the process's main thread, which leads its thread
		// group: in a v1 memory cgroup (cgroup.Leaf.EnterThread) it would
		// take the whole process's memory charges with it, and the kernel
		// would kill this process for a worker's max_rss (it did: a test
		// binary, OOM-killed in a worker's leaf). Serve from another
		// thread: a goroutine started now cannot run on this one, locked
		// to this goroutine until that one has a thread of its own.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			s.serve(threadID())
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	s.serve(threadID())
}

// serve starts the processes asked for, from thread tid, until reqs is
// closed.
func (s *spawner) serve(tid int) {
	s.tid.Store(int64(tid))
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
