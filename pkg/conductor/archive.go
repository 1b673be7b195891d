package conductor

import (
	"context"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/archive"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/wire"
)

// archiver keeps the final state of every job in conductord's archive
// (internal/archive, under DataDir/archive/<namespace>; with NATSURL too)
// for the retention period, so
// that the state bucket holds a final state only ArchiveAfter: the
// server's memory then grows with the jobs of the last ArchiveAfter, not
// with the retention period's. The states come with the job ends
// (endsTaker), are put before the ends are acked, and are read back for
// anyone by request on subject.Space.ArchiveGet (a Client reads a job
// gone from the bucket there).
//
// It is a startstop.Service: its goroutine drops the segments past the
// retention every minute, from Start until Stop; close closes the store
// after.
type archiver struct {
	*startstop.Func
	store *archive.Store
	c     *Conductor
	sub   *nats.Subscription
}

// archiving reports whether the conductor archives final states: not
// with MemoryStorage, where nothing outlives the process anyway.
func (c *Conductor) archiving() bool { return !c.cfg.MemoryStorage }

// archiveExpireEvery is how often the archive drops what is past its
// retention.
const archiveExpireEvery = time.Minute

func newArchiver(c *Conductor) (*archiver, error) {
	store, err := archive.Open(archive.Config{
		Dir:       filepath.Join(c.cfg.DataDir, "archive", c.cfg.Namespace),
		MaxAge:    c.cfg.Retention,
		MaxStates: c.cfg.ArchiveMaxStates,
		MaxBytes:  c.cfg.ArchiveMaxBytes,
		Sync:      c.cfg.Sync == SyncAlways,
		Logger:    c.log.With("component", "archive"),
	})
	if err != nil {
		return nil, err
	}
	a := &archiver{store: store, c: c}
	a.Func = startstop.NewFunc(a.run)
	return a, nil
}

// serve answers the requests for archived states on ArchiveGet: the state,
// or an empty answer with status 404.
func (a *archiver) serve() error {
	sub, err := a.c.nc.Subscribe(a.c.space.ArchiveGet(), a.get)
	if err != nil {
		return err
	}
	a.sub = sub
	return nil
}

func (a *archiver) get(m *nats.Msg) {
	state, ok, err := a.store.Get(string(m.Data))
	r := nats.NewMsg(m.Reply)
	switch {
	case err != nil:
		a.c.log.Warn("read the archive", "job", string(m.Data), "err", err)
		r.Header.Set(names.HeaderStatus, "503")
		r.Header.Set(names.HeaderNATSDescription, err.Error())
	case !ok:
		r.Header.Set(names.HeaderStatus, "404")
	default:
		r.Data = state
	}
	_ = m.RespondMsg(r)
}

// put archives the final states of ends.
func (a *archiver) put(ends wire.Ends) error {
	var entries []archive.Entry
	now := time.Now()
	for _, e := range ends.Jobs {
		if e.Status.Final() && len(e.State) > 0 {
			entries = append(entries, archive.Entry{ID: e.ID, Ended: now, State: e.State})
		}
	}
	if len(entries) == 0 {
		return nil
	}
	return a.store.Put(entries...)
}

func (a *archiver) run(ctx context.Context) {
	t := time.NewTicker(archiveExpireEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a.store.Expire(now)
		}
	}
}

// close stops answering and closes the store. The archiver and the ends
// taker must have stopped.
func (a *archiver) close() {
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
	}
	if err := a.store.Close(); err != nil {
		a.c.log.Warn("close the archive", "err", err)
	}
}
