package conductor

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/archive"
	"github.com/conductor-run/conductor/internal/startstop"
)

// The storage guard keeps the embedded server's store writable when its
// disk fills, and says how it is (docs/reliability.md, "Storage"). Every
// check it reads the free space of the data directory and bounds the job
// stream (MaxMsgs and MaxBytes, with DiscardNew) so that the jobs queued
// can still drain: what draining them will write (their final states,
// the job ends, the archive) is budgeted beyond a reserve
// (storage_budget.go). New jobs are refused first; the jobs already
// queued have their drain's room and the reserve. It restarts JetStream
// in-process when the server disabled it, or a store refuses writes for
// good after an error (a write error sticks until the stream is
// reloaded), once the disk has room again; if it has none, the guard
// gives back the room it holds in its ballast (storage_ballast.go) so
// that the drain can go on, and says so when it has no more to give.

// StorageState names how the store is.
type StorageState string

const (
	// StorageOK: the store takes writes.
	StorageOK StorageState = "ok"
	// StorageDegraded: the store takes writes, but messages were found lost
	// at start (see StorageStatus.Lost).
	StorageDegraded StorageState = "degraded"
	// StorageFull: new jobs are refused: what is free beyond the reserve
	// is kept for the drain of the jobs already queued, whose states and
	// acks are stored.
	StorageFull StorageState = "full"
	// StorageFailed: JetStream is disabled, or a store refuses writes
	// after an error; nothing can be written until it is restarted.
	StorageFailed StorageState = "failed"
)

// StorageStatus is how the conductor's store is, as GET /healthz shows it.
type StorageStatus struct {
	State StorageState `json:"state"`
	// Reason says what is wrong and what to do; "" when State is ok.
	Reason string `json:"reason,omitempty"`
	// FreeBytes and ReserveBytes are the data directory's free space and
	// the room kept for states and acks; 0 without an embedded file store.
	FreeBytes    uint64 `json:"free_bytes,omitempty"`
	ReserveBytes uint64 `json:"reserve_bytes,omitempty"`
	// JobBytesLimit and JobMsgsLimit are the job stream's MaxBytes and
	// MaxMsgs now; 0: none.
	JobBytesLimit int64 `json:"job_bytes_limit,omitempty"`
	JobMsgsLimit  int64 `json:"job_msgs_limit,omitempty"`
	// DrainBytesPerJob is the room kept for each job queued: the bytes
	// its queued state and its drain are estimated to write.
	DrainBytesPerJob int64 `json:"drain_bytes_per_job,omitempty"`
	// BallastBytes is the room the guard holds in its ballast file, to
	// give back if a store meets a full disk: not in FreeBytes, though
	// the guard counts it as free.
	BallastBytes uint64 `json:"ballast_bytes,omitempty"`
	// WriteErrors counts the times since start that the store stopped
	// taking writes after an error (or JetStream was disabled).
	WriteErrors uint64 `json:"write_errors"`
	// Restarts counts the in-process restarts of JetStream tried since start.
	Restarts uint64 `json:"restarts,omitempty"`
	// Lost lists the streams found to have lost messages, at this start or
	// at an earlier one not yet cleared (docs/reliability.md).
	Lost []StreamLoss `json:"lost,omitempty"`
}

// Writable reports whether the store takes writes of job states.
func (s StorageStatus) Writable() bool { return s.State != StorageFailed }

// LostMessages is the sum of the messages of Lost.
func (s StorageStatus) LostMessages() uint64 {
	var n uint64
	for _, l := range s.Lost {
		n += l.Msgs
	}
	return n
}

// DefaultStorageCheck is how often the storage guard checks.
const DefaultStorageCheck = time.Second

// defaultReserve is Config.StorageReserve's default on a filesystem of
// size total: 1/16 of it, within 16 MiB and 1 GiB.
func defaultReserve(total uint64) uint64 {
	return min(max(total/16, 16<<20), 1<<30)
}

// storageGuard is the guard, a startstop.Service. Its goroutine (and,
// before it starts, the Conductor's Start) owns the job stream's limits,
// the restarts (retryAt, stuck), the ballast, the cost estimate and the
// checkpoint; mu guards status, which the HTTP API and the metrics read,
// werr, started and rebuilt, which the server's log writes, and endStates
// and endBytes, which the ends taker adds to.
type storageGuard struct {
	*startstop.Func
	dir       string
	reserve   uint64 // 0: defaultReserve of the filesystem
	every     time.Duration
	log       *slog.Logger
	ns        *server.Server
	jsConfig  server.JetStreamConfig // for restarts
	js        jetstream.JetStream
	jobs      func(jobLimits) jetstream.StreamConfig
	ckpt      *checkpoint
	kick      chan struct{}      // a check now; buffered 1
	fresh     chan chan struct{} // a check now, and a channel to close after it
	retryAt   time.Time          // no restart before
	stuck     bool               // short of room with no ballast left, logged
	ballast   *ballast
	ballastAt time.Time // no ballast written before, after one failed
	cost      jobCost
	seen      [2]uint64 // endStates and endBytes at the last check

	mu        sync.Mutex
	status    StorageStatus
	werr      string          // the last write error logged since the last restart
	started   bool            // the start's checks are done
	rebuilt   map[string]bool // streams the server warned about while it started
	endStates uint64          // final states the ends taker took, and their bytes
	endBytes  uint64
}

func newStorageGuard(dir string, reserve uint64, every time.Duration, log *slog.Logger) *storageGuard {
	g := &storageGuard{
		dir: dir, reserve: reserve, every: cmp.Or(every, DefaultStorageCheck), log: log,
		kick: make(chan struct{}, 1), fresh: make(chan chan struct{}),
		status: StorageStatus{State: StorageOK}, ballast: newBallast(dir), cost: newJobCost(),
	}
	g.Func = startstop.NewFunc(g.run)
	return g
}

// serverLogged is called with each warning and error of the embedded
// server: those that say a store stopped taking writes, or JetStream was
// disabled, mark the store broken until the guard restarts JetStream.
func (g *storageGuard) serverLogged(msg string) {
	g.noteRebuilt(msg)
	m := strings.ToLower(msg)
	if !strings.Contains(m, "critical write error") && !strings.Contains(m, "disabling jetstream") &&
		!strings.Contains(m, "will be disabled") {
		return
	}
	g.mu.Lock()
	if g.werr == "" {
		g.status.WriteErrors++
	}
	g.werr = msg
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// noteRebuilt notes, while the conductor starts, the streams the file
// store warned about ("Filestore [NAME] ..."): those it recovered from
// their block files rather than from the index it wrote at its last stop.
func (g *storageGuard) noteRebuilt(msg string) {
	rest, ok := strings.CutPrefix(msg, "Filestore [")
	name, _, found := strings.Cut(rest, "]")
	if !ok || !found {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started {
		if g.rebuilt == nil {
			g.rebuilt = map[string]bool{}
		}
		g.rebuilt[name] = true
	}
}

// Status is the guard's last view of the store.
func (g *storageGuard) Status() StorageStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.status
	s.Lost = append([]StreamLoss(nil), s.Lost...)
	return s
}

// Fresh has the guard check now and returns its view after the check, or
// its last view if the check does not end within ctx, or the guard does
// not run: the answer of GET /healthz, which must say full as soon as jobs
// are refused, not a check later.
func (g *storageGuard) Fresh(ctx context.Context) StorageStatus {
	done := make(chan struct{})
	select {
	case g.fresh <- done:
		select {
		case <-done:
		case <-ctx.Done():
		}
	case <-ctx.Done():
	case <-g.Stopped():
	}
	return g.Status()
}

func (g *storageGuard) run(ctx context.Context) {
	t := time.NewTicker(g.every)
	defer t.Stop()
	for {
		var answer []chan struct{}
		select {
		case <-ctx.Done():
			g.ckpt.save(context.WithoutCancel(ctx), g.js, true)
			return
		case <-t.C:
		case <-g.kick:
		case done := <-g.fresh:
			answer = append(answer, done)
		}
		g.check(ctx)
		// Those who asked while it ran take this check too: a flood of
		// /healthz is one check at a time.
		for more := true; more; {
			select {
			case done := <-g.fresh:
				answer = append(answer, done)
			default:
				more = false
			}
		}
		for _, done := range answer {
			close(done)
		}
	}
}

// prepareStorage checks the store found at start against the checkpoint,
// and sets the job stream's limit before the conductor takes jobs.
func (c *Conductor) prepareStorage(ctx context.Context) error {
	g := c.storage
	if g == nil {
		return nil
	}
	g.js, g.jobs = c.js, c.jobStreamConfig
	g.ckpt = newCheckpoint(c.cfg.DataDir, g.log)
	if err := g.ballast.load(); err != nil {
		return err
	}
	g.mu.Lock()
	g.started = true
	rebuilt := g.rebuilt
	g.mu.Unlock()
	lost, err := g.ckpt.verify(ctx, c.js, rebuilt)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.status.Lost = lost
	g.mu.Unlock()
	g.check(ctx)
	return nil
}

// Storage is how the store is: what GET /healthz shows. Without an
// embedded file store (NATSURL, MemoryStorage) it is always ok: another
// server's store is that server's to watch, and memory is not a disk.
func (c *Conductor) Storage() StorageStatus {
	st := StorageStatus{State: StorageOK}
	if c.storage != nil {
		st = c.storage.Status()
	}
	if c.archive != nil && st.State == StorageOK {
		if d := c.archive.store.Stats().Damage; !d.Zero() {
			st.State, st.Reason = StorageDegraded, archiveDamage(d)
		}
	}
	return st
}

// storageNow is Storage after a check of the storage guard made now (or
// within healthzCheck, if the guard is slow to answer): so that /healthz
// says full from the moment jobs are refused, where the guard's own checks
// come every Config.StorageCheck.
func (c *Conductor) storageNow(ctx context.Context) StorageStatus {
	if c.storage != nil {
		ctx, cancel := context.WithTimeout(ctx, healthzCheck)
		defer cancel()
		c.storage.Fresh(ctx)
	}
	return c.Storage()
}

// healthzCheck bounds the wait of GET /healthz for a check of the storage.
const healthzCheck = 2 * time.Second

// archiveDamage says what the archive found damaged, and what to do.
func archiveDamage(d archive.Damage) string {
	return fmt.Sprintf("the archive of final states was found damaged: %d bytes torn, %d records (%d bytes) skipped, %d indexes rebuilt, %d segments set aside, %d corrupt reads; "+
		"the states of some ended jobs may be gone (docs/reliability.md, \"Storage\")",
		d.TornBytes, d.SkippedRecords, d.SkippedBytes, d.IndexesRebuilt, d.SegmentsLost, d.CorruptReads)
}

// check looks at the disk and the server once, and acts.
func (g *storageGuard) check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	free, total, err := diskSpace(g.dir)
	if err != nil {
		g.setStatus(StorageFailed, fmt.Sprintf("cannot read the free space of %s: %v", g.dir, err), 0, 0)
		return
	}
	reserve := cmp.Or(g.reserve, defaultReserve(total))
	need := uint64(ballastSize(reserve)) // the ballast is given back below it
	free = g.giveBack(free, need)
	if free >= need {
		g.stuck = false
	}
	g.mu.Lock()
	werr := g.werr
	g.mu.Unlock()
	if reason := g.broken(werr); reason != "" && !g.recover(reason, free, reserve, restartRoom(need)) {
		return
	}
	free = g.keepBallast(free, reserve)
	g.observeEnds()
	b, lim, err := g.limitJobs(ctx, free, reserve)
	if err != nil {
		if ctx.Err() == nil {
			g.setStatus(StorageFailed, "cannot limit the job stream: "+err.Error(), free, reserve)
		}
		return
	}
	g.mu.Lock()
	g.status.JobMsgsLimit, g.status.JobBytesLimit = lim.msgs, lim.bytes
	g.status.DrainBytesPerJob, g.status.BallastBytes = b.perJob, uint64(g.ballast.held)
	g.mu.Unlock()
	switch {
	case free < restartRoom(need):
		g.setStatus(StorageFull, "new jobs are refused: "+g.cornered(free, restartRoom(need)), free, reserve)
	case free < need:
		g.setStatus(StorageFull, fmt.Sprintf("new jobs are refused: %s free on %s, less than the storage ballast's %s, and conductord holds none (given back, the disk being full beyond the reserve): the jobs queued drain in that room; free space on the disk",
			bytesText(free), g.dir, bytesText(need)), free, reserve)
	case b.free < b.reserve:
		g.setStatus(StorageFull, fmt.Sprintf("%s free on %s%s, the reserve is %s: new jobs are refused until space returns; the jobs queued still store their states",
			bytesText(uint64(b.free)), g.dir, g.ballastText(), bytesText(reserve)), free, reserve)
	case b.refuses(lim):
		g.setStatus(StorageFull, fmt.Sprintf("new jobs are refused: the job stream holds %d jobs (%s), its limit: of the %s free on %s%s, the reserve (%s) and what draining them writes (about %d bytes a job: final states, job ends, archive) leave too little; room returns as the queue drains, and the jobs queued still store their states",
			b.msgs, bytesText(uint64(b.bytes)), bytesText(uint64(b.free)), g.dir, g.ballastText(), bytesText(reserve), b.perJob), free, reserve)
	default:
		g.setStatus(StorageOK, "", free, reserve)
	}
	g.ckpt.save(ctx, g.js, false)
}

func (g *storageGuard) setStatus(state StorageState, reason string, free, reserve uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if state == StorageOK && len(g.status.Lost) > 0 {
		state, reason = StorageDegraded, lossReason(g.status.Lost)
	}
	if state != g.status.State {
		lvl, attrs := slog.LevelWarn, []any{"free", free, "reserve", reserve}
		if state == StorageOK {
			lvl = slog.LevelInfo
		} else {
			attrs = append(attrs, "reason", reason)
		}
		g.log.Log(context.Background(), lvl, "storage "+string(state), attrs...)
	}
	g.status.State, g.status.Reason = state, reason
	g.status.FreeBytes, g.status.ReserveBytes = free, reserve
}

// bytesText writes n in MiB, or bytes under one.
func bytesText(n uint64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
