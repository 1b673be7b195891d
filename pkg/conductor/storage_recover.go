package conductor

import (
	"fmt"
	"time"
)

// The storage guard's way out of a store that refuses writes: JetStream
// restarted in-process once there is room for it, and the ballast given
// back when there is none (docs/reliability.md, "A full disk").

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

// recover gets a store that refuses writes going again: it restarts
// JetStream once there is room for it to write in (as much as the
// ballast), giving the ballast's room back if it must. It returns the free
// space then, and whether JetStream was restarted. With no room and no
// ballast left, nothing can be written, so no job can end and free its
// room: the store is stuck until someone frees space, and the guard says
// so, once in the log and in its status.
func (g *storageGuard) recover(reason string, free, reserve uint64) (uint64, bool) {
	need := uint64(ballastSize(reserve))
	if free < need && g.ballast.held > 0 {
		n, err := g.ballast.release()
		if err != nil {
			g.log.Error("give back the storage ballast", "err", err)
		} else {
			g.log.Warn("storage ballast given back: JetStream restarts in its room", "bytes", n, "free", free)
			free += uint64(n)
		}
	}
	if free < need {
		r := fmt.Sprintf("%s; %s free on %s, less than the %s JetStream needs to restart, and conductord holds no room to give back (its ballast is used): nothing can be written, so no job can end and free its room; free space on the disk: JetStream is restarted once %s is free",
			reason, bytesText(free), g.dir, bytesText(need), bytesText(need))
		if !g.stuck {
			g.stuck = true
			g.log.Error("storage stuck: " + r)
		}
		g.setStatus(StorageFailed, r, free, reserve)
		return free, false
	}
	if time.Now().Before(g.retryAt) {
		if g.Status().State != StorageFailed {
			g.setStatus(StorageFailed, reason+"; JetStream is restarted at most every "+restartRetry.String(), free, reserve)
		}
		return free, false
	}
	g.retryAt = time.Now().Add(restartRetry)
	if err := g.restart(); err != nil {
		g.setStatus(StorageFailed, reason+"; restarting JetStream failed: "+err.Error()+"; tried again every "+restartRetry.String()+", or restart conductord", free, reserve)
		return free, false
	}
	g.stuck = false
	return free, true
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
