package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// fetcher keeps pull requests outstanding for the jobs its source wants:
// one per waiting worker, plus the jobs held ahead while they are short.
// Its goroutine (run) owns the levels (but for their sub, see mu), polled
// and the pull requests; the subscriptions' callbacks send it deliveries
// on msgs, the workers' Next calls poke it on kick when the demand
// changed, and a reconnect pokes it on fresh.
type fetcher struct {
	fetcherConfig
	levels []*level // one per priority, highest first
	polled int      // the jobs the long polls may yet bring, all together

	msgs  chan delivery // subscriptions -> run: jobs and statuses
	kick  chan struct{} // Next -> run: demand changed
	fresh chan struct{} // agent -> run: reconnected, requests lost

	// mu guards each level's sub, which drain and close read while run
	// may renew it.
	mu sync.Mutex
}

type fetcherConfig struct {
	nc      *nats.Conn
	space   subject.Space
	typ     string
	expires time.Duration
	log     *slog.Logger
	buffer  int // deliveries buffered for run
	// demand reports the workers waiting, the jobs wanted at hand or on
	// their way, and the jobs at hand.
	demand func() (waiting, target, ready int)
	// deliver takes a job that came.
	deliver func(m *nats.Msg)
}

func newFetcher(cfg fetcherConfig) (*fetcher, error) {
	f := &fetcher{
		fetcherConfig: cfg,
		msgs:          make(chan delivery, cfg.buffer),
		kick:          make(chan struct{}, 1),
		fresh:         make(chan struct{}, 1),
	}
	for _, p := range wire.Priorities {
		l := &level{prio: p, pullSubj: "$JS.API.CONSUMER.MSG.NEXT." + cfg.space.JobStream() + "." + cfg.space.ConsumerAt(cfg.typ, string(p))}
		if err := f.newInbox(l); err != nil {
			f.close()
			return nil, err
		}
		f.levels = append(f.levels, l)
	}
	return f, nil
}

// poke tells run that the demand changed.
func (f *fetcher) poke() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// reconnected tells run that the server may have forgotten its requests.
func (f *fetcher) reconnected() {
	select {
	case f.fresh <- struct{}{}:
	default:
	}
}

// subs returns the levels' subscriptions.
func (f *fetcher) subs() []*nats.Subscription {
	f.mu.Lock()
	defer f.mu.Unlock()
	var subs []*nats.Subscription
	for _, l := range f.levels {
		subs = append(subs, l.sub)
	}
	return subs
}

// drain drains the subscriptions, so that the jobs already in the client's
// queue reach run (and are put back by close) instead of waiting out their
// lease. It waits 5s at most.
func (f *fetcher) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, sub := range f.subs() {
		closed := sub.StatusChanged(nats.SubscriptionClosed)
		if sub.Drain() != nil {
			continue
		}
		select {
		case <-closed:
		case <-ctx.Done():
			_ = sub.Unsubscribe()
		}
	}
}

// close unsubscribes (a reconnect during a drain may have renewed an
// inbox) and returns the jobs delivered that run did not take. run must
// have stopped.
func (f *fetcher) close() []*nats.Msg {
	for _, sub := range f.subs() {
		_ = sub.Unsubscribe()
	}
	var left []*nats.Msg
	for len(f.msgs) > 0 {
		if d := <-f.msgs; !isStatus(d.m) {
			left = append(left, d.m)
		}
	}
	return left
}

func isStatus(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") != ""
}

// Priorities. Each priority of a job type has a consumer of its own on the
// job stream; the fetcher asks the highest priority that may have jobs
// first, with a no-wait request (a probe) that the server answers at once.
// A priority whose probe came back short is left alone for emptyFor, so
// that a backlog of normal jobs costs one empty probe of high per emptyFor,
// not one per job. When every priority is found empty, the fetcher parks a
// long poll on each: the first job to come, of any priority, takes the
// waiting worker, and once no worker waits the other polls are withdrawn
// (their inboxes renewed), so that no host holds jobs it has no worker for.

// emptyFor is how long a priority found without jobs is not asked again
// while a lower one has jobs: a high job queued behind a backlog of normal
// ones waits at most about this long for the next free worker.
const emptyFor = 20 * time.Millisecond

// probeWait bounds the wait for the answer to a probe, which the server
// gives at once unless it restarts.
const probeWait = 2 * time.Second

// level is the pull state of the jobs of one priority. Only the fetcher
// touches it, except sub, which drain and close read under fetcher.mu.
type level struct {
	prio     wire.Priority
	pullSubj string
	inbox    string
	sub      *nats.Subscription
	reqs     []pullRequest // outstanding, oldest first
	credit   int           // jobs requested and not yet come
	polling  bool          // reqs are long polls, not probes
	emptyAt  time.Time     // when a probe last came back short; zero: has jobs, or unknown
}

// pullRequest is one outstanding pull request: how many jobs it may still
// bring, and when to stop waiting for its answer.
type pullRequest struct {
	n        int
	deadline time.Time
}

// delivery is a message on a level's inbox: a job, or a status answering a
// pull request. inbox tells a renewed inbox's stragglers from the current.
type delivery struct {
	lvl   *level
	inbox string
	m     *nats.Msg
}

// drop forgets n jobs of the oldest request: they will not come.
func (l *level) drop(n int) {
	l.credit -= n
	l.reqs[0].n -= n
	if l.reqs[0].n <= 0 {
		l.reqs = l.reqs[1:]
	}
	if len(l.reqs) == 0 {
		l.credit, l.polling = 0, false
	}
}

// knownEmpty reports whether a probe found l empty less than emptyFor ago.
func (l *level) knownEmpty(now time.Time) bool {
	return !l.emptyAt.IsZero() && now.Sub(l.emptyAt) < emptyFor
}

// newInbox makes a fresh reply subject for l's pull requests and drains
// the old one, if any: requests the server still holds for the old subject
// lose their interest and deliver nothing more, while jobs already on their
// way to it still arrive.
func (f *fetcher) newInbox(l *level) error {
	inbox := f.nc.NewInbox()
	sub, err := f.nc.Subscribe(inbox, func(m *nats.Msg) { f.msgs <- delivery{lvl: l, inbox: inbox, m: m} })
	if err != nil {
		return fmt.Errorf("subscribe to job deliveries: %w", err)
	}
	f.mu.Lock()
	old := l.sub
	l.inbox, l.sub = inbox, sub
	f.mu.Unlock()
	l.reqs, l.credit, l.polling = nil, 0, false
	if old != nil {
		if err := old.Drain(); err != nil {
			f.log.Debug("drain a renewed job inbox", "pool", f.typ, "err", err)
		}
	}
	return nil
}

// covered is how many of the jobs wanted the outstanding requests may
// bring: every probe's, and what is left of the polls. The polls of the
// several priorities wait for the same workers: a job that comes on one
// uses up the others' share too (f.polled). covered trims f.polled to the
// least any priority's poll may still bring: once one priority is no
// longer polled (its poll was used up, expired or refused), the polls
// stand for none, are withdrawn, and the priorities are asked afresh.
func (f *fetcher) covered() int {
	probes, polls := 0, -1
	for _, l := range f.levels {
		c := 0
		if l.polling {
			c = l.credit
		} else {
			probes += l.credit
		}
		if polls < 0 || c < polls {
			polls = c
		}
	}
	f.polled = min(f.polled, polls)
	return probes + f.polled
}

// request asks for want more jobs: a probe of the highest priority that
// may have some, or, when none may, a long poll on every priority. A
// priority with a probe unanswered is not polled until the answer comes.
func (f *fetcher) request(now time.Time, want int) error {
	for _, l := range f.levels {
		if (l.polling && l.credit > 0) || l.knownEmpty(now) {
			continue
		}
		return f.pull(l, want, false, now)
	}
	for _, l := range f.levels {
		if !l.polling && l.credit > 0 {
			return nil
		}
	}
	for _, l := range f.levels {
		if err := f.pull(l, want, true, now); err != nil {
			return err
		}
	}
	f.polled += want
	return nil
}

// pull sends one pull request for n jobs of l: a long poll, or a probe.
func (f *fetcher) pull(l *level, n int, poll bool, now time.Time) error {
	req := fmt.Appendf(nil, `{"batch":%d,"no_wait":true}`, n)
	deadline := now.Add(probeWait)
	if poll {
		req = fmt.Appendf(nil, `{"batch":%d,"expires":%d}`, n, f.expires.Nanoseconds())
		deadline = now.Add(f.expires + 2*time.Second)
	}
	if err := f.nc.PublishRequest(l.pullSubj, l.inbox, req); err != nil {
		return err
	}
	l.reqs = append(l.reqs, pullRequest{n: n, deadline: deadline})
	l.credit += n
	l.polling = poll
	return nil
}

// withdraw takes back every long poll: no worker waits for what they would
// bring, or they have brought what was asked of them all together. A
// priority whose poll brought nothing is known empty from now.
func (f *fetcher) withdraw() {
	f.polled = 0
	now := time.Now()
	for _, l := range f.levels {
		if !l.polling || l.credit == 0 {
			continue
		}
		if !l.emptyAt.IsZero() { // no job came since its probe found none
			l.emptyAt = now
		}
		if err := f.newInbox(l); err != nil {
			f.log.Warn("withdraw a request for jobs", "pool", f.typ, "priority", l.prio, "err", err)
		}
	}
}

// run owns the pull requests. It keeps the jobs requested and not yet
// come (see covered) plus the jobs in ready equal to the demand: the
// workers waiting in Next plus the prefetch. The server fills a consumer's
// requests in order, so arrivals and expiries are counted against the
// oldest request of their priority.
func (f *fetcher) run(ctx context.Context) {
	var (
		timer = time.NewTimer(time.Hour)
		retry time.Time // no request before this, after a failure
	)
	defer timer.Stop()
	for {
		now := time.Now()
		waiting, target, ready := f.demand()
		need := target - ready
		covered := f.covered()
		if need <= 0 || f.polled == 0 {
			f.withdraw()
			covered = f.covered()
		}
		// Ask when a waiting worker would otherwise starve, or when the
		// buffer is half empty: one request then brings many jobs.
		if want := need - covered; want > 0 && (waiting > covered || want*2 >= target) && !now.Before(retry) {
			if err := f.request(now, want); err != nil {
				f.log.Warn("request jobs; retrying", "pool", f.typ, "err", err)
				retry = now.Add(time.Second)
			}
		}
		// Wake for the oldest request's deadline: the server may drop a
		// request unanswered (a restart, a reconnect), and its credit must
		// not be held forever.
		wake := retry
		for _, l := range f.levels {
			if len(l.reqs) > 0 && (wake.IsZero() || l.reqs[0].deadline.Before(wake)) {
				wake = l.reqs[0].deadline
			}
		}
		if !wake.IsZero() {
			timer.Reset(max(time.Until(wake), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		case <-f.fresh:
			for _, l := range f.levels {
				if err := f.newInbox(l); err != nil {
					f.log.Warn("renew job inbox", "pool", f.typ, "err", err)
				}
				l.emptyAt = time.Time{}
			}
			f.polled = 0
		case <-timer.C:
			now := time.Now()
			for _, l := range f.levels {
				if len(l.reqs) > 0 && !now.Before(l.reqs[0].deadline) {
					l.drop(l.reqs[0].n)
				}
			}
			if !retry.IsZero() && !now.Before(retry) {
				retry = time.Time{}
			}
		case d := <-f.msgs:
			if f.received(d) {
				retry = time.Now().Add(time.Second)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// received settles one delivery: a job goes to a worker or to ready, a
// status ends (part of) the oldest request of its priority. It reports
// whether the server refused a request, so that the next waits.
func (f *fetcher) received(d delivery) (refused bool) {
	l, m := d.lvl, d.m
	if !isStatus(m) {
		if d.inbox == l.inbox && len(l.reqs) > 0 {
			if l.polling {
				f.polled--
			}
			l.drop(1)
		}
		l.emptyAt = time.Time{}
		f.deliver(m)
		return false
	}
	if d.inbox != l.inbox || len(l.reqs) == 0 {
		return false // for a withdrawn request
	}
	switch code := m.Header.Get("Status"); code {
	case "100": // heartbeat
	case "404", "408": // no jobs (more), or the poll expired: it brings nothing more
		if !l.polling {
			l.emptyAt = time.Now()
		}
		l.drop(l.reqs[0].n)
	default:
		f.log.Warn("request jobs; retrying", "pool", f.typ, "priority", l.prio, "status", code, "description", m.Header.Get("Description"))
		l.drop(l.reqs[0].n)
		return true
	}
	return false
}
