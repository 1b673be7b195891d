package client

import (
	"bytes"
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
)

// Limits of Jobs.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// allStatuses are every status a job can be in, in the order of its life.
var allStatuses = []Status{StatusQueued, StatusHeld, StatusRunning, StatusSucceeded, StatusFailed, StatusDead, StatusCancelled}

// JobQuery selects the jobs that Client.Jobs lists. The zero JobQuery
// lists the DefaultListLimit jobs updated last, of any status and type.
type JobQuery struct {
	// Status keeps the jobs in any of these statuses; every status if empty.
	Status []Status
	// Type keeps the jobs of this type; every type if empty.
	Type string
	// Limit is the most jobs listed, 0 to MaxListLimit; 0 means
	// DefaultListLimit.
	Limit int
	// Before, if not zero, keeps the jobs last updated strictly before it.
	// To list the next page, pass the UpdatedAt of the last job listed.
	Before time.Time
}

// Jobs lists the jobs that q selects, the most recently updated first.
//
// A query for dead jobs alone reads the dead job index: each job comes with
// its payload, and dead jobs outlive the state retention until re-queued.
// Any other query reads the latest state of every job retained (see
// Config.Retention) in one pass, so it costs time in proportion to the
// jobs retained, and memory in proportion to q.Limit.
//
// A job updated during a listing is listed once, with a state it had
// during it. A job updated while the pages of a listing are read moves to
// the front: the later pages do not list it. Jobs updated at the very same
// nanosecond as the last job of a page are listed on that page or not at
// all.
func (c *Client) Jobs(ctx context.Context, q JobQuery) ([]*Job, error) {
	if err := c.forOperators("Jobs"); err != nil {
		return nil, err
	}
	if err := q.check(); err != nil {
		return nil, err
	}
	q.Limit = cmp.Or(q.Limit, DefaultListLimit)
	held := c.heldJobs()
	if slices.Contains(q.Status, StatusHeld) && held == nil {
		// Only the hosts know what they hold: listen to them first.
		r, err := c.heardHosts(ctx)
		if err != nil {
			return nil, err
		}
		held = heldBy(r.live())
	}
	if held != nil && slices.ContainsFunc(q.Status, func(s Status) bool { return s == StatusQueued || s == StatusHeld }) {
		return c.queuedOrHeld(ctx, q, held)
	}
	kv := c.kv
	if len(q.Status) > 0 && !slices.ContainsFunc(q.Status, func(s Status) bool { return s != StatusDead }) {
		var err error
		if kv, err = c.bucket(ctx, c.space.DeadBucket(), "dead job index"); err != nil {
			return nil, err
		}
	}
	jobs, err := c.newestJobs(ctx, kv, q)
	markHeld(jobs, held)
	return jobs, err
}

// queuedOrHeld answers a query for queued or held jobs, given the jobs the
// live hosts hold (id -> host): both kinds are queued in the state bucket,
// and only the hosts' heartbeats tell them apart. The statuses other than
// held come from one pass over the bucket, reading as many more jobs as
// are held, so that a query for queued ones alone still fills its limit;
// the held ones are read by id, since hosts take the oldest jobs first and
// a pass keeps the newest.
func (c *Client) queuedOrHeld(ctx context.Context, q JobQuery, held map[string]string) ([]*Job, error) {
	var jobs []*Job
	stored := q
	stored.Status = slices.DeleteFunc(slices.Clone(q.Status), func(s Status) bool { return s == StatusHeld })
	if len(stored.Status) > 0 {
		stored.Limit = q.Limit + len(held)
		found, err := c.newestJobs(ctx, c.kv, stored)
		if err != nil {
			return nil, err
		}
		markHeld(found, held)
		for _, j := range found {
			if j.Status != StatusHeld {
				jobs = append(jobs, j)
			}
		}
	}
	if slices.Contains(q.Status, StatusHeld) {
		found, err := c.heldStates(ctx, q, held)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, found...)
	}
	slices.SortStableFunc(jobs, func(a, b *Job) int { return b.UpdatedAt.Compare(a.UpdatedAt) })
	return jobs[:min(len(jobs), q.Limit)], nil
}

// heldStates reads the state of each job of held (id -> host) that q
// selects but for its status: queued in the bucket, read as held. A job
// with no state (published straight to the stream) is left out.
func (c *Client) heldStates(ctx context.Context, q JobQuery, held map[string]string) ([]*Job, error) {
	var out []*Job
	for _, id := range slices.Sorted(maps.Keys(held)) {
		e, err := c.getState(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("conductor: list held jobs: read job %s: %w", id, err)
		}
		var j Job
		if json.Unmarshal(e.Value(), &j) != nil || j.Status != StatusQueued ||
			(q.Type != "" && j.Type != q.Type) || (!q.Before.IsZero() && !j.UpdatedAt.Before(q.Before)) {
			continue
		}
		j.Status, j.HeldBy = StatusHeld, held[id]
		out = append(out, &j)
	}
	return out, nil
}

// heldJobs returns the jobs the live hosts hold ahead (see heldBy), or nil
// if the Client does not listen to the hosts.
func (c *Client) heldJobs() map[string]string {
	hosts := c.HeardHosts()
	if hosts == nil {
		return nil
	}
	return heldBy(hosts)
}

// heldBy maps the ids of the jobs that hosts hold ahead, as their last
// heartbeats name them, to the host that holds each.
func heldBy(hosts []Host) map[string]string {
	held := map[string]string{}
	for _, h := range hosts {
		for _, p := range h.Pools {
			for _, id := range p.HeldJobs {
				held[id] = h.Host
			}
		}
	}
	return held
}

// markHeld reads each queued job of jobs that a host holds as held.
func markHeld(jobs []*Job, held map[string]string) {
	for _, j := range jobs {
		if host, ok := held[j.ID]; ok && j.Status == StatusQueued {
			j.Status, j.HeldBy = StatusHeld, host
		}
	}
}

// check returns an ErrBadQuery for a query Jobs cannot answer.
func (q *JobQuery) check() error {
	for _, s := range q.Status {
		if !slices.Contains(allStatuses, s) {
			names := make([]string, len(allStatuses))
			for i, s := range allStatuses {
				names[i] = string(s)
			}
			return fmt.Errorf("%w: unknown status %q: want %s", ErrBadQuery, s, strings.Join(names, ", "))
		}
	}
	if q.Type != "" {
		if err := subject.Token("job type", q.Type); err != nil {
			return fmt.Errorf("%w: %w", ErrBadQuery, err)
		}
	}
	if q.Limit < 0 || q.Limit > MaxListLimit {
		return fmt.Errorf("%w: limit %d: want 1 to %d (or 0 for %d)", ErrBadQuery, q.Limit, MaxListLimit, DefaultListLimit)
	}
	return nil
}

// selector decides which stored states a query selects, decoding as
// little of each as it can.
type selector struct {
	q JobQuery
	// statuses and typ are q's statuses and type as JSON writes them,
	// quoted ("running" with its quotes), to look for in a state before
	// decoding it; typ is nil for any type.
	statuses [][]byte
	typ      []byte
}

func newSelector(q JobQuery) *selector {
	s := &selector{q: q}
	for _, st := range q.Status {
		s.statuses = append(s.statuses, []byte(`"`+string(st)+`"`))
	}
	if q.Type != "" {
		s.typ = []byte(`"` + q.Type + `"`)
	}
	return s
}

// jobHead is what a selector decodes of a state: the fields it filters on.
type jobHead struct {
	Type      string    `json:"type"`
	Status    Status    `json:"status"`
	UpdatedAt time.Time `json:"updated_at"`
}

// keeps reports whether the query selects the job state raw, and when the
// job was updated.
func (s *selector) keeps(raw []byte) (time.Time, bool) {
	if !s.mayKeep(raw) {
		return time.Time{}, false
	}
	var h jobHead
	if json.Unmarshal(raw, &h) != nil ||
		(len(s.q.Status) > 0 && !slices.Contains(s.q.Status, h.Status)) ||
		(s.q.Type != "" && h.Type != s.q.Type) ||
		(!s.q.Before.IsZero() && !h.UpdatedAt.Before(s.q.Before)) {
		return time.Time{}, false
	}
	return h.UpdatedAt, true
}

// mayKeep reports whether the state raw can be one the query selects,
// without decoding it. A status ([a-z]+) and a type ([A-Za-z0-9_-]+) are
// written as they are, in quotes, unless a character is escaped as
// \uXXXX. So a state with no \u in it is not selected if it holds none of
// the query's statuses, quoted, or not its type, quoted. This spares
// decoding most states when a query names statuses or a type: decoding is
// most of what a pass costs conductord.
func (s *selector) mayKeep(raw []byte) bool {
	if bytes.Contains(raw, []byte(`\u`)) {
		return true
	}
	if s.statuses != nil && !slices.ContainsFunc(s.statuses, func(st []byte) bool { return bytes.Contains(raw, st) }) {
		return false
	}
	return s.typ == nil || bytes.Contains(raw, s.typ)
}

// Bounds of a pass over a bucket.
const (
	// passIdle bounds the wait for the next value: a value the pass waits
	// for can vanish before it is sent (expired with the bucket's TTL).
	// Values otherwise come at once.
	passIdle = 2 * time.Second
	// passRounds bounds how many times a pass reads on to the values
	// written while it read.
	passRounds = 4
)

// newestJobs makes one pass over the latest value of every key of kv (a
// bucket of job states by id) and returns the newest q.Limit of the jobs
// that q selects, newest first. A value that is not a job state is
// skipped.
//
// The watch sends the latest value of every key, then a nil marker, then
// the values written since it began. A key rewritten during the pass
// before its turn has come is skipped by the server and comes later, with
// its newer value; so the marker does not end the pass: at the marker,
// the pass reads on to the bucket's last revision then, and again to the
// last one then, until nothing was written meanwhile (at most passRounds
// times). A key seen twice counts by its newer value; a key deleted
// during the pass is forgotten.
func (c *Client) newestJobs(ctx context.Context, kv jetstream.KeyValue, q JobQuery) ([]*Job, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("conductor: list jobs: %w", err)
	}
	defer w.Stop()
	sel := newSelector(q)
	top := &newest{n: q.Limit, byKey: map[string]*kept{}}
	var (
		last   jetstream.KeyValueEntry // the last value read
		bound  uint64                  // after the marker, the revision to read to
		rounds int
	)
	idle := time.NewTimer(passIdle)
	defer idle.Stop()
	for {
		var e jetstream.KeyValueEntry
		var open bool
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-idle.C:
			// Complete if what it waited for has vanished (see passIdle);
			// else the store is slow, and a page would be partial.
			if err := c.passComplete(ctx, kv.Bucket(), last); err != nil {
				return nil, err
			}
			return top.jobs(), nil
		case e, open = <-w.Updates():
		}
		idle.Reset(passIdle)
		if !open {
			return nil, errors.New("conductor: list jobs: the watch of the job states ended before every state came")
		}
		if e != nil {
			top.drop(e.Key())
			if e.Operation() == jetstream.KeyValuePut {
				if at, ok := sel.keeps(e.Value()); ok {
					top.offer(&kept{key: e.Key(), updated: at, raw: e.Value()})
				}
			}
			last = e
			if bound == 0 || e.Revision() < bound {
				continue
			}
		}
		// The marker, or the revision it was told to read to. After
		// passRounds, every key has been read (the marker came); keys
		// written since count with a value they had during the pass.
		if last == nil || rounds == passRounds {
			return top.jobs(), nil
		}
		rounds++
		if bound, err = c.lastRevision(ctx, kv.Bucket()); err != nil {
			return nil, err
		}
		if last.Revision() >= bound {
			return top.jobs(), nil
		}
	}
}

// passComplete reports, after a wait of passIdle for the next value, why
// a pass whose last value read is last is not complete: nil if it is, the
// bucket holding nothing written after last (the values it waited for
// expired), else ErrIncomplete.
func (c *Client) passComplete(ctx context.Context, bucket string, last jetstream.KeyValueEntry) error {
	bound, err := c.lastRevision(ctx, bucket)
	if err != nil {
		return err
	}
	var read uint64
	if last != nil {
		read = last.Revision()
	}
	if read >= bound {
		return nil
	}
	return fmt.Errorf("%w: no state came for %v, at revision %d of %d", ErrIncomplete, passIdle, read, bound)
}

// lastRevision returns the revision of the last value (or delete) stored
// in bucket, 0 if it has none.
func (c *Client) lastRevision(ctx context.Context, bucket string) (uint64, error) {
	s, err := c.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return 0, fmt.Errorf("conductor: list jobs: open the stream of bucket %s: %w", bucket, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subject.KV(bucket, ">"))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("conductor: list jobs: read the last value of bucket %s: %w", bucket, err)
	}
	return m.Sequence, nil
}

// newest keeps the newest n of the job states it is offered, by updated_at
// then key. It is a min-heap (container/heap) with the oldest state kept on
// top, indexed by key. It keeps the states undecoded: only those listed in
// the end are decoded.
type newest struct {
	n     int
	heap  []*kept
	byKey map[string]*kept
}

// kept is a job state held by newest.
type kept struct {
	key     string
	updated time.Time
	raw     []byte
	i       int // its index in newest.heap
}

// compare orders states oldest first: by updated_at, then by key.
func (k *kept) compare(l *kept) int {
	return cmp.Or(k.updated.Compare(l.updated), strings.Compare(k.key, l.key))
}

// offer keeps k if it is among the newest n states offered.
func (h *newest) offer(k *kept) {
	switch {
	case len(h.heap) < h.n:
		heap.Push(h, k)
	case h.heap[0].compare(k) < 0:
		delete(h.byKey, h.heap[0].key)
		k.i = 0
		h.heap[0] = k
		heap.Fix(h, 0)
	default:
		return
	}
	h.byKey[k.key] = k
}

// drop forgets the state of key, if kept.
func (h *newest) drop(key string) {
	if k, ok := h.byKey[key]; ok {
		heap.Remove(h, k.i)
		delete(h.byKey, key)
	}
}

// jobs decodes the states kept, newest first.
func (h *newest) jobs() []*Job {
	slices.SortFunc(h.heap, func(a, b *kept) int { return b.compare(a) })
	jobs := make([]*Job, 0, len(h.heap))
	for _, k := range h.heap {
		var j Job
		if json.Unmarshal(k.raw, &j) == nil {
			jobs = append(jobs, &j)
		}
	}
	return jobs
}

// Len, Less, Swap, Push and Pop implement heap.Interface, for newest's
// methods only.
func (h *newest) Len() int           { return len(h.heap) }
func (h *newest) Less(i, j int) bool { return h.heap[i].compare(h.heap[j]) < 0 }
func (h *newest) Swap(i, j int) {
	h.heap[i], h.heap[j] = h.heap[j], h.heap[i]
	h.heap[i].i, h.heap[j].i = i, j
}
func (h *newest) Push(x any) {
	k := x.(*kept)
	k.i = len(h.heap)
	h.heap = append(h.heap, k)
}
func (h *newest) Pop() any {
	k := h.heap[len(h.heap)-1]
	h.heap[len(h.heap)-1] = nil
	h.heap = h.heap[:len(h.heap)-1]
	return k
}
