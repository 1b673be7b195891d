package conductor

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
)

// Several conductords may serve one namespace (docs/deployment.md, "Two
// conductords"): each serves the HTTP API, the submissions, the job reads
// and the hosts' requests, but what must happen once happens on one of
// them, the leader, elected through the namespace's leader bucket: the
// ends taker (the counts, the batch ends it marks, the archive of the ends),
// the batch watcher, the stray repair and the workers' stats roll-ups
// published.
//
// The leader holds subject.LeaderKey: it made it with a create, and
// renews it by an update at its revision every lease/3; the bucket's time
// to live is the lease, so a leader that stops renewing (killed, cut off)
// loses the key a lease after its last renewal, and another conductord,
// trying a create every lease/3, takes it. A leader steps down by itself
// once 2/3 of a lease has passed since the start of its last renewal that
// succeeded: before the key can expire, so two never lead at once as long
// as their clocks run at about the same rate. The writes that must not
// come from two (the counts) are compare-and-swap besides: a leader that
// finds its counts written by another steps down at once.

// leadership is this conductord's side of the election. It is a
// startstop.Service: its goroutine renews or tries for the lease from
// Start until Stop, which gives the lease up (the key deleted), so that
// another conductord takes over within a third of a lease.
//
// The key's value is the conductord's id and a token of this run
// ("id/run"): two processes with one id (a data directory copied) are two
// candidates, not one. A conductord started again takes back at once
// only the lease its previous run held (prev, kept in its data
// directory), and only at its first try.
type leadership struct {
	*startstop.Func
	id    string
	value string // the key's value while this run leads: id/run
	lease time.Duration
	log   *slog.Logger
	// remake makes the leader bucket again if it is gone (deleted by
	// hand); nil: it is not remade.
	remake func(ctx context.Context) (jetstream.KeyValue, error)

	// kv is the leader bucket; prev is the value the previous run of this
	// conductord wrote, taken back at the first try only (tried). The run
	// goroutine owns them once Start has been called (first before it).
	kv    jetstream.KeyValue
	prev  string
	tried bool

	mu       sync.Mutex
	term     context.Context // while leader; nil otherwise
	endTerm  context.CancelFunc
	rev      uint64        // the leader key's revision this conductord wrote last
	deadline time.Time     // the term ends by itself then: 2/3 of a lease past the start of its last renewal
	expiry   *time.Timer   // ends the term at deadline
	changed  chan struct{} // closed and replaced when a term begins or ends
	holder   string        // the leader's id as last read; "" unknown
	members  int           // the conductords alive as last counted, this one too
	// abdicated is set when the term ended for a failure of this
	// conductord's own: the key is deleted at the next step, and no try
	// is made before backoff.
	abdicated bool
	backoff   time.Time
	putFailed bool // the last member write failed (logged once)

	terms atomic.Uint64 // the terms won
}

func newLeadership(kv jetstream.KeyValue, id string, lease time.Duration, log *slog.Logger) *leadership {
	l := &leadership{
		kv: kv, id: id, value: id + "/" + uuid.NewString()[:8], lease: lease, log: log,
		changed: make(chan struct{}), members: 1,
	}
	l.Func = startstop.NewFunc(l.run)
	return l
}

func (l *leadership) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.release()
			return
		case <-t.C:
		}
		l.step(ctx)
		l.count(ctx)
		t.Reset(l.lease / 3)
	}
}

// step renews the lease, or tries for it.
func (l *leadership) step(ctx context.Context) {
	began := time.Now()
	l.mu.Lock()
	leading, rev, deadline := l.term != nil, l.rev, l.deadline
	abdicated, backoff := l.abdicated, l.backoff
	l.abdicated = false
	l.mu.Unlock()
	if leading {
		// Bounded by the term's deadline: a renewal that comes later is
		// of no use, the term is over.
		rctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		next, err := l.kv.Update(rctx, subject.LeaderKey, []byte(l.value), rev)
		switch {
		case err == nil:
			l.renewed(next, began)
		case conflict(err):
			l.depose("another conductord holds the lease")
		default:
			l.remakeIfGone(ctx, err)
			l.log.Warn("renew the leader lease; trying again", "err", err)
		}
		return
	}
	rctx, cancel := context.WithTimeout(ctx, l.lease/3)
	defer cancel()
	if abdicated {
		// Given up for a failure of its own: let another take it at once.
		if err := l.kv.Delete(rctx, subject.LeaderKey, jetstream.LastRevision(rev)); err != nil && !conflict(err) {
			l.log.Warn("give the leader lease up; another conductord takes it when it expires", "err", err)
		}
	}
	if began.Before(backoff) {
		return
	}
	next, err := l.kv.Create(rctx, subject.LeaderKey, []byte(l.value))
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := l.kv.Get(rctx, subject.LeaderKey)
		if gerr != nil {
			return
		}
		holder := string(e.Value())
		first := !l.tried
		l.tried = true
		own := holder == l.value || first && l.prev != "" && holder == l.prev
		if !own {
			l.mu.Lock()
			l.holder, _, _ = strings.Cut(holder, "/")
			l.mu.Unlock()
			return
		}
		// This run's lease (its term ran out before its key), or its
		// previous run's (killed): taken back at once, not a lease later.
		next, err = l.kv.Update(rctx, subject.LeaderKey, []byte(l.value), e.Revision())
	}
	l.tried = true
	if err != nil {
		l.remakeIfGone(ctx, err)
		if ctx.Err() == nil && !conflict(err) {
			l.log.Warn("try for the leader lease", "err", err)
		}
		return
	}
	l.elect(next, began)
}

// remakeIfGone makes the leader bucket again if err says it is gone.
func (l *leadership) remakeIfGone(ctx context.Context, err error) {
	gone := errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, context.DeadlineExceeded) || apiErrCode(err) == jetstream.JSErrCodeStreamNotFound
	if l.remake == nil || !gone {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, l.lease/3)
	defer cancel()
	if _, err := l.kv.Status(sctx); !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrBucketNotFound) &&
		apiErrCode(err) != jetstream.JSErrCodeStreamNotFound {
		return // there, or cannot tell: the error was of another kind (a stream between leaders, a slow server)
	}
	kv, rerr := l.remake(ctx)
	if rerr != nil {
		l.log.Error("the leader bucket is gone and cannot be made again", "err", rerr)
		return
	}
	l.log.Warn("the leader bucket was gone: made again")
	l.kv = kv
}

// count renews this conductord's member key and counts those alive.
func (l *leadership) count(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, l.lease/3)
	defer cancel()
	_, err := l.kv.Put(rctx, subject.MemberKey(l.id), []byte(l.value))
	l.mu.Lock()
	logIt := (err != nil) != l.putFailed
	l.putFailed = err != nil
	l.mu.Unlock()
	if logIt && err != nil {
		l.log.Warn("say this conductord is alive (its member key); the others count it when it can", "err", err)
	}
	if err != nil {
		return
	}
	keys, err := l.kv.ListKeysFiltered(rctx, subject.MemberKey("*"))
	if err != nil {
		return
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	l.mu.Lock()
	l.members = max(n, 1)
	l.mu.Unlock()
}

func (l *leadership) elect(rev uint64, began time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term != nil {
		return
	}
	l.term, l.endTerm = context.WithCancel(context.Background())
	l.rev, l.holder = rev, l.id
	l.arm(began)
	l.terms.Add(1)
	close(l.changed)
	l.changed = make(chan struct{})
	l.log.Info("leader: this conductord does what must happen once", "conductord", l.id, "lease", l.lease)
}

// renewed records a renewal that began at began and wrote rev.
func (l *leadership) renewed(rev uint64, began time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term == nil {
		return // the term ended meanwhile (its deadline)
	}
	l.rev = rev
	l.arm(began)
}

// arm sets the term's deadline 2/3 of a lease past began, when the
// renewal that succeeded began: the key, written after began, expires a
// lease after; the term ends a third of a lease before, by itself if no
// renewal comes. l.mu is held.
func (l *leadership) arm(began time.Time) {
	l.deadline = began.Add(l.lease * 2 / 3)
	wait := time.Until(l.deadline)
	if l.expiry == nil {
		l.expiry = time.AfterFunc(wait, l.expire)
		return
	}
	l.expiry.Reset(wait)
}

// expire ends the term if its deadline has passed without a renewal.
func (l *leadership) expire() {
	l.mu.Lock()
	late := l.term != nil && !time.Now().Before(l.deadline)
	l.mu.Unlock()
	if late {
		l.depose("the lease could not be renewed in time")
	}
}

// depose ends the term, if there is one, for reason: another holds the
// lease, or it ran out.
func (l *leadership) depose(reason string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.end(reason)
}

// abdicate ends the term for a failure of this conductord's own (what
// the leader does cannot be done here): the key is given up at the next
// step, and this conductord does not try again for two leases, so that
// another leads.
func (l *leadership) abdicate(reason string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term == nil {
		return
	}
	l.abdicated, l.backoff = true, time.Now().Add(2*l.lease)
	l.end(reason)
}

// end ends the term, if there is one. l.mu is held.
func (l *leadership) end(reason string) {
	if l.term == nil {
		return
	}
	l.endTerm()
	l.term, l.endTerm, l.holder = nil, nil, ""
	if l.expiry != nil {
		l.expiry.Stop()
	}
	close(l.changed)
	l.changed = make(chan struct{})
	if reason == "stopping" {
		l.log.Info("leader no more: stopping", "conductord", l.id)
		return
	}
	l.log.Warn("leader no more: "+reason, "conductord", l.id)
}

// release gives the lease up and removes the member key: Stop's last
// step, once what the leader did has stopped.
func (l *leadership) release() {
	l.mu.Lock()
	leading, rev := l.term != nil, l.rev
	l.mu.Unlock()
	l.depose("stopping")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if leading {
		if err := l.kv.Delete(ctx, subject.LeaderKey, jetstream.LastRevision(rev)); err != nil && !conflict(err) {
			l.log.Warn("give the leader lease up; another conductord takes it when it expires", "err", err)
		}
	}
	_ = l.kv.Delete(ctx, subject.MemberKey(l.id))
}

// first tries for the lease once, before Start: a conductord alone on its
// namespace, or started again after a kill, leads when Start returns.
func (l *leadership) first(ctx context.Context) {
	l.step(ctx)
	l.count(ctx)
}

// termNumber returns the number of the current term (the terms won so
// far), 0 while this conductord does not lead.
func (l *leadership) termNumber() uint64 {
	if l == nil {
		return 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.leadingLocked() {
		return 0
	}
	return l.terms.Load()
}

// leadingLocked reports whether a term runs and its deadline has not
// passed (a process paused past it has not led since, whatever its
// timer says). l.mu is held.
func (l *leadership) leadingLocked() bool {
	return l.term != nil && time.Now().Before(l.deadline)
}

// leading reports whether this conductord is the leader now.
func (l *leadership) leading() bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leadingLocked()
}

// peers returns how many other conductords were alive at the last count.
func (l *leadership) peers() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.members - 1
}

// await returns the context of the current term once this conductord
// leads; false if ctx ends first.
func (l *leadership) await(ctx context.Context) (context.Context, bool) {
	for {
		if ctx.Err() != nil {
			return nil, false
		}
		l.mu.Lock()
		term, changed := l.term, l.changed
		l.mu.Unlock()
		if term != nil && term.Err() == nil {
			if !l.leading() {
				l.expire() // past its deadline: ended now, not when the timer runs
				continue
			}
			return term, true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, false
		}
	}
}

// each calls f for each term this conductord leads, one at a time, until
// ctx ends; f's context ends with the term or with ctx.
func (l *leadership) each(ctx context.Context, f func(ctx context.Context)) {
	if l == nil { // no election: the only conductord
		f(ctx)
		return
	}
	for {
		term, ok := l.await(ctx)
		if !ok {
			return
		}
		tctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(term, cancel)
		f(tctx)
		select {
		case <-tctx.Done():
		case <-ctx.Done():
		}
		stop()
		cancel()
	}
}
