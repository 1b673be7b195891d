package conductor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/archive"
	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
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
	// caughtUp is set once the ends that waited for conductord at its
	// start are archived: until then a state not found may only be not
	// archived yet, and is answered 503, not 404.
	caughtUp atomic.Bool
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

// serveArchive answers the requests for archived states on ArchiveGet:
// the state, or an empty answer with status 404 (none), or 503 (the
// archive cannot tell yet, or failed). Without an archive (MemoryStorage)
// every answer is 404, so that a reader of a job with no state learns it
// has none, not that no conductord answers.
func (c *Conductor) serveArchive() error {
	sub, err := c.nc.Subscribe(c.space.ArchiveGet(), func(m *nats.Msg) {
		if !subject.IsInbox(m.Reply) {
			return // an answer goes to an inbox only (subject.IsInbox)
		}
		r := nats.NewMsg(m.Reply)
		if c.archive == nil {
			r.Header.Set(names.HeaderStatus, "404")
		} else {
			c.archive.get(string(m.Data), r)
		}
		_ = m.RespondMsg(r)
	})
	if err != nil {
		return fmt.Errorf("conductor: serve the archive: %w", err)
	}
	c.subs = append(c.subs, sub)
	return nil
}

// get fills r, the answer to a request for job id's archived state.
func (a *archiver) get(id string, r *nats.Msg) {
	state, ok, err := a.lookup(id)
	switch {
	case err != nil:
		r.Header.Set(names.HeaderStatus, "503")
		r.Header.Set(names.HeaderNATSDescription, err.Error())
	case ok:
		r.Data = state
	default:
		r.Header.Set(names.HeaderStatus, "404")
	}
}

// lookup returns job id's archived state; ok false if the archive has
// none, an error if it cannot tell (yet).
func (a *archiver) lookup(id string) (state []byte, ok bool, err error) {
	state, ok, err = a.store.Get(id)
	switch {
	case err != nil:
		a.c.log.Warn("read the archive", "job", fmt.Sprintf("%.100q", id), "err", err)
		return nil, false, err
	case ok:
		return state, true, nil
	case !a.caughtUp.Load():
		return nil, false, errors.New("the archive is taking the job ends that waited for conductord; try again")
	}
	return nil, false, nil
}

// archived is lookup of c's archive, if it has one.
func (c *Conductor) archived(id string) ([]byte, bool, error) {
	if c.archive == nil {
		return nil, false, nil
	}
	return c.archive.lookup(id)
}

// archiveFinals archives the final states the hosts' store wrote
// (hostsvc.Config.Archive); nothing without an archive.
func (c *Conductor) archiveFinals(states []hostsvc.FinalState) error {
	if c.archive == nil {
		return nil
	}
	now := time.Now()
	entries := make([]archive.Entry, len(states))
	for i, f := range states {
		entries[i] = archive.Entry{ID: f.ID, Ended: now, State: f.State}
	}
	return c.archive.store.Put(entries...)
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

// close closes the store. The archiver, the ends taker and the answers
// (serveArchive) must have stopped.
func (a *archiver) close() {
	if err := a.store.Close(); err != nil {
		a.c.log.Warn("close the archive", "err", err)
	}
}
