package conductor

import (
	"fmt"
	"time"
)

// The storage guard's way out of a full disk: the ballast given back when
// the disk is full beyond the reserve, and JetStream restarted in-process,
// once there is room for it, when a store refuses writes
// (docs/reliability.md, "A full disk").

// ballastText says how much of the free space the guard counts is its
// ballast's.
func (g *storageGuard) ballastText() string {
	if g.ballast.held == 0 {
		return ""
	}
	return " (" + bytesText(uint64(g.ballast.held)) + " of it held as ballast)"
}

// broken says why the store cannot write, or "".
func (g *storageGuard) broken(werr string) string {
	switch {
	case !g.ns.JetStreamEnabled():
		return "JetStream is disabled"
	case werr != "":
		return "the store refuses writes after an error (" + werr + ")"
	}
	return ""
}

// restartRetry is the least time between two restarts of JetStream.
const restartRetry = 10 * time.Second

// giveBack gives the ballast's room back when less than need (its size) is
// free: the disk is full beyond the reserve, filled by another program or
// by a drain larger than the budget, and any write may fail (a job's
// state, a worker's new consumer), so that no job ends and frees room. The
// jobs queued drain in the room it gave back. It returns the free space
// then.
func (g *storageGuard) giveBack(free, need uint64) uint64 {
	if free >= need || g.ballast.held == 0 {
		return free
	}
	n, err := g.ballast.release()
	if err != nil {
		g.log.Error("give back the storage ballast", "err", err)
		return free
	}
	g.log.Warn("storage ballast given back: the disk is full beyond the reserve; the jobs queued drain in its room", "bytes", n, "free", free)
	return free + uint64(n)
}

// restartRoom is the room, with a ballast of size need, below which the
// guard takes writes to be failing (stuck), and in which it restarts
// JetStream after a write error: a quarter of the ballast. Not the whole
// ballast: once it is given back, the jobs queued drain into its room, so
// the free space stays below its size until someone frees space, and a
// store that met a write error then (a write begun before the guard gave
// the ballast back) would never be restarted, nor the queue drain.
func restartRoom(need uint64) uint64 { return need / 4 }

// cornered says that less than room is free and there is no ballast left
// to give back, and logs it the first time: writes may fail, so jobs may
// not end and free their room, until someone frees space on the disk.
func (g *storageGuard) cornered(free, room uint64) string {
	r := fmt.Sprintf("%s free on %s, less than %s, and conductord holds no room to give back (its ballast is used): writes may fail, so jobs may not end and free their room; free space on the disk",
		bytesText(free), g.dir, bytesText(room))
	if !g.stuck {
		g.stuck = true
		g.log.Error("storage stuck: " + r)
	}
	return r
}

// recover gets a store that refuses writes going again: it restarts
// JetStream once room (restartRoom) is free, for it to write in. It
// returns whether JetStream was restarted. With less free, nothing can be
// written, so no job can end and free its room: the store is stuck until
// someone frees space, and the guard says so, once in the log and in its
// status.
func (g *storageGuard) recover(reason string, free, reserve, room uint64) bool {
	if free < room {
		g.setStatus(StorageFailed, reason+"; "+g.cornered(free, room)+": JetStream is restarted once "+bytesText(room)+" is free", free, reserve)
		return false
	}
	if time.Now().Before(g.retryAt) {
		if g.Status().State != StorageFailed {
			g.setStatus(StorageFailed, reason+"; JetStream is restarted at most every "+restartRetry.String(), free, reserve)
		}
		return false
	}
	g.retryAt = time.Now().Add(restartRetry)
	if err := g.restart(); err != nil {
		g.setStatus(StorageFailed, reason+"; restarting JetStream failed: "+err.Error()+"; tried again every "+restartRetry.String()+", or restart conductord", free, reserve)
		return false
	}
	return true
}

// restart restarts JetStream in-process: its stores are reloaded from
// their files, which clears their write errors.
func (g *storageGuard) restart() error {
	g.log.Warn("restarting JetStream to clear its write errors", "data", g.dir)
	if g.ns.JetStreamEnabled() {
		if err := g.ns.ShutdownJetStream(); err != nil {
			return err
		}
	}
	// Errors logged from here on are the new stores', kept for the next check.
	g.mu.Lock()
	g.werr = ""
	g.status.Restarts++
	g.mu.Unlock()
	cfg := g.jsConfig
	if err := g.ns.EnableJetStream(&cfg); err != nil {
		return err
	}
	g.log.Info("JetStream restarted", "data", g.dir)
	return nil
}

// ballastRetry is how long the guard waits to write its ballast again
// after it failed to.
const ballastRetry = time.Minute

// keepBallast writes the ballast when it lacks and the reserve is free
// besides it, and returns the free space then.
func (g *storageGuard) keepBallast(free, reserve uint64) uint64 {
	size := ballastSize(reserve)
	lack := size - g.ballast.held
	if lack <= 0 || free < reserve+uint64(lack) || time.Now().Before(g.ballastAt) {
		return free
	}
	if err := g.ballast.fill(size); err != nil {
		g.ballastAt = time.Now().Add(ballastRetry)
		g.log.Warn("no storage ballast: it is tried again in "+ballastRetry.String(), "err", err)
		return free
	}
	g.log.Info("storage ballast held", "bytes", size, "file", g.ballast.path)
	return free - uint64(lack)
}
