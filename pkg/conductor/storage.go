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
// check it reads the free space of the data directory and lets the job
// stream grow only into what is free beyond the reserve: the stream's
// MaxBytes, with DiscardNew, is its size plus that room. New jobs are
// refused first; the states, acks and tombstones of the jobs already
// queued have the reserve, and each ack frees its job's room. It restarts
// JetStream in-process when the server disabled it, or a store refuses
// writes for good after an error (a write error sticks until the stream
// is reloaded), once the disk has room again.

// StorageState names how the store is.
type StorageState string

const (
	// StorageOK: the store takes writes.
	StorageOK StorageState = "ok"
	// StorageDegraded: the store takes writes, but messages were found lost
	// at start (see StorageStatus.Lost).
	StorageDegraded StorageState = "degraded"
	// StorageFull: less than the reserve is free; new jobs are refused,
	// the states and acks of the jobs already queued are stored.
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
	// JobBytesLimit is the job stream's MaxBytes now; 0: none.
	JobBytesLimit int64 `json:"job_bytes_limit,omitempty"`
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
// before it starts, the Conductor's Start) owns the job stream's limit,
// the restarts (restartAt) and the checkpoint; mu guards status, which the
// HTTP API and the metrics read, and werr, started and rebuilt, which the
// server's log writes.
type storageGuard struct {
	*startstop.Func
	dir      string
	reserve  uint64 // 0: defaultReserve of the filesystem
	every    time.Duration
	log      *slog.Logger
	ns       *server.Server
	jsConfig server.JetStreamConfig // for restarts
	js       jetstream.JetStream
	jobs     func(maxBytes int64) jetstream.StreamConfig
	ckpt     *checkpoint
	kick     chan struct{} // a check now; buffered 1
	retryAt  time.Time     // no restart before, after one failed

	mu      sync.Mutex
	status  StorageStatus
	werr    string          // the last write error logged since the last restart
	started bool            // the start's checks are done
	rebuilt map[string]bool // streams the server warned about while it started
}

func newStorageGuard(dir string, reserve uint64, every time.Duration, log *slog.Logger) *storageGuard {
	g := &storageGuard{
		dir: dir, reserve: reserve, every: cmp.Or(every, DefaultStorageCheck), log: log,
		kick: make(chan struct{}, 1), status: StorageStatus{State: StorageOK},
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

func (g *storageGuard) run(ctx context.Context) {
	t := time.NewTicker(g.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			g.ckpt.save(context.WithoutCancel(ctx), g.js, true)
			return
		case <-t.C:
		case <-g.kick:
		}
		g.check(ctx)
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
	g.mu.Lock()
	werr := g.werr
	g.mu.Unlock()
	if reason := g.broken(werr); reason != "" {
		if free < reserve {
			g.setStatus(StorageFailed, reason+fmt.Sprintf("; %s free on %s, below the reserve of %s: JetStream is restarted once there is room", bytesText(free), g.dir, bytesText(reserve)), free, reserve)
			return
		}
		if time.Now().Before(g.retryAt) {
			return
		}
		if err := g.restart(); err != nil {
			g.retryAt = time.Now().Add(restartRetry)
			g.setStatus(StorageFailed, reason+"; restarting JetStream failed: "+err.Error()+"; tried again every "+restartRetry.String()+", or restart conductord", free, reserve)
			return
		}
	}
	limit, shut, err := g.limitJobs(ctx, free, reserve)
	if err != nil {
		if ctx.Err() == nil {
			g.setStatus(StorageFailed, "cannot limit the job stream: "+err.Error(), free, reserve)
		}
		return
	}
	g.mu.Lock()
	g.status.JobBytesLimit = limit
	g.mu.Unlock()
	if free < reserve || shut {
		g.setStatus(StorageFull, fmt.Sprintf("%s free on %s, the reserve is %s: new jobs are refused (the job stream is at its limit of %s) until space returns; the jobs queued still store their states", bytesText(free), g.dir, bytesText(reserve), bytesText(uint64(limit))), free, reserve)
	} else {
		g.setStatus(StorageOK, "", free, reserve)
	}
	g.ckpt.save(ctx, g.js, false)
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

// restartRetry is how long the guard waits after a failed restart.
const restartRetry = 10 * time.Second

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

// limitJobs sets the job stream's MaxBytes to its size plus the room
// beyond the reserve, when that moved by more than a quarter of the
// reserve, or at once to close the stream when less than the reserve is
// free; the free space stays above three quarters of the reserve. It
// returns the limit in force and whether a job of the largest size would
// be refused.
func (g *storageGuard) limitJobs(ctx context.Context, free, reserve uint64) (limit int64, shut bool, err error) {
	cfg := g.jobs(0)
	stream, err := g.js.Stream(ctx, cfg.Name)
	if err != nil {
		return 0, false, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, false, err
	}
	size := int64(info.State.Bytes)
	want := max(size+int64(free)-int64(reserve), 1)
	limit = info.Config.MaxBytes
	step := int64(reserve / 4)
	closing := free < reserve && limit > size
	if limit <= 0 || closing || want <= limit-step || want >= limit+step {
		if _, err := g.js.UpdateStream(ctx, g.jobs(want)); err != nil {
			return limit, false, err
		}
		limit = want
	}
	return limit, size+int64(cfg.MaxMsgSize) > limit, nil
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
