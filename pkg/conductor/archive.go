package conductor

import (
	"context"
	"encoding/json"
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
//
// Several conductords on one namespace each archive what they took (the
// ends, as leader; the final states their hosts' store wrote), so one
// conductord of them answers each request (a queue group), and asks the
// others on ArchivePeers for a state it does not hold (archivePeers).
func (c *Conductor) serveArchive() error {
	sub, err := c.nc.QueueSubscribe(c.space.ArchiveGet(), "conductord", func(m *nats.Msg) {
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
	if c.archive == nil {
		return nil
	}
	// A peer's question: answered with the state, 404 or 503.
	sub, err = c.nc.Subscribe(c.space.ArchivePeers(), func(m *nats.Msg) {
		if !subject.IsInbox(m.Reply) || m.Header.Get(headerArchiveAsker) == c.lead.id {
			return // its own question
		}
		r := nats.NewMsg(m.Reply)
		fillArchived(r, c.archive.local, string(m.Data))
		_ = m.RespondMsg(r)
	})
	if err != nil {
		return fmt.Errorf("conductor: serve the archive to the other conductords: %w", err)
	}
	c.subs = append(c.subs, sub)
	return nil
}

// headerArchiveAsker names the conductord that asks its peers, which
// does not answer itself.
const headerArchiveAsker = "Conductor-Asker"

// archivePeersWait bounds the wait for the other conductords' answers.
const archivePeersWait = time.Second

// peers asks the other conductords alive (leader.go counts them) for job
// id's archived state: the first state answered, or not found once each
// has answered so; an error if one could not tell, or did not answer
// within archivePeersWait (it may be the one that has it).
func (a *archiver) peers(id string) ([]byte, bool, error) {
	n := a.c.lead.peers()
	if n <= 0 {
		return nil, false, nil
	}
	inbox := a.c.nc.NewRespInbox()
	sub, err := a.c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	q := nats.NewMsg(a.c.space.ArchivePeers())
	q.Reply, q.Data = inbox, []byte(id)
	q.Header.Set(headerArchiveAsker, a.c.lead.id)
	if err := a.c.nc.PublishMsg(q); err != nil {
		return nil, false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), archivePeersWait)
	defer cancel()
	var failed error
	for i := range n {
		m, err := sub.NextMsgWithContext(ctx)
		switch {
		case err != nil:
			return nil, false, fmt.Errorf("%d of the %d other conductords did not answer for their archives within %s", n-i, n, archivePeersWait)
		case len(m.Data) > 0:
			if !finalStateOf(m.Data, id) {
				failed = fmt.Errorf("an answer for job %s from another conductord's archive is not its final state", id)
				continue
			}
			return m.Data, true, nil
		case m.Header.Get(names.HeaderStatus) != "404":
			failed = fmt.Errorf("another conductord cannot read its archive: %s", m.Header.Get(names.HeaderNATSDescription))
		}
	}
	return nil, false, failed
}

// get fills r, the answer to a request for job id's archived state.
func (a *archiver) get(id string, r *nats.Msg) { fillArchived(r, a.lookup, id) }

// fillArchived fills r with what lookup finds of job id: the state, or
// status 404 (none) or 503 (it cannot tell).
func fillArchived(r *nats.Msg, lookup func(id string) ([]byte, bool, error), id string) {
	state, ok, err := lookup(id)
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

// lookup returns job id's archived state, from this conductord's
// archive or another's; ok false if none has it, an error if one cannot
// tell (yet).
func (a *archiver) lookup(id string) (state []byte, ok bool, err error) {
	state, ok, err = a.local(id)
	if ok || err != nil {
		return state, ok, err
	}
	return a.peers(id)
}

// local returns job id's state from this conductord's archive; ok false
// if it has none, an error if it cannot tell (yet).
func (a *archiver) local(id string) (state []byte, ok bool, err error) {
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
		if e.Status.Final() && len(e.State) > 0 && !e.Archived {
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

// finalStateOf reports whether state is a final state of job id: what a
// peer's answer must be (one with NATS permissions to answer, on servers
// of one's own, could send anything).
func finalStateOf(state []byte, id string) bool {
	var st wire.Job
	return json.Unmarshal(state, &st) == nil && st.ID == id && st.Status.Final()
}
