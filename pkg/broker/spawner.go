package broker

import (
	"os/exec"
	"runtime"
	"sync"
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
	reply chan<- error
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
	for req := range s.reqs {
		req.reply <- req.cmd.Start()
	}
}

// start calls cmd.Start on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	reply := make(chan error, 1)
	s.reqs <- spawnReq{cmd: cmd, reply: reply}
	return <-reply
}
