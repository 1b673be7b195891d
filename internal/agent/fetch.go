package agent

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
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
	api     string // the JetStream API's prefix: "$JS.API", or a host account's
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
	// remake asks for the type's consumers again: they were removed
	// (conductord removes those of a type no host served for a while,
	// docs/architecture.md, "Consumers").
	remake func(ctx context.Context) error
}

func newFetcher(cfg fetcherConfig) (*fetcher, error) {
	if cfg.remake == nil {
		cfg.remake = func(context.Context) error { return errors.New("this fetcher cannot ask for consumers") }
	}
	f := &fetcher{
		fetcherConfig: cfg,
		msgs:          make(chan delivery, cfg.buffer),
		kick:          make(chan struct{}, 1),
		fresh:         make(chan struct{}, 1),
	}
	for _, p := range wire.Priorities {
		consumer := cfg.space.ConsumerAt(cfg.typ, string(p))
		l := &level{
			prio:     p,
			pullSubj: cmp.Or(cfg.api, "$JS.API") + ".CONSUMER.MSG.NEXT." + cfg.space.JobStream() + "." + consumer,
			ackMark:  "." + cfg.space.JobStream() + "." + consumer + ".",
		}
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
		for _, r := range l.retired {
			subs = append(subs, r.sub)
		}
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
	return len(m.Data) == 0 && m.Header.Get(names.HeaderNATSStatus) != ""
}

// run owns the pull requests. It keeps the jobs requested and not yet
// come (see covered) plus the jobs in ready equal to the demand: the
// workers waiting in Next plus the prefetch. The server fills a consumer's
// requests in order, so a job that comes is counted against the oldest
// request of its priority; a status comes to the reply subject of the
// request it answers, each request's own.
func (f *fetcher) run(ctx context.Context) {
	var (
		timer = time.NewTimer(time.Hour)
		retry time.Time // no request before this, after a failure
	)
	defer timer.Stop()
	for {
		now := time.Now()
		// The server may drop a request unanswered (a restart, a
		// reconnect): its credit is not held past its deadline.
		for _, l := range f.levels {
			l.expire(now)
		}
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
		absentDue := f.probeAbsent(now)
		// Wake for the first request's deadline, to ask again the
		// priorities that had no consumer while polls wait on the others,
		// and to drain the retired inboxes.
		wake := retry
		for _, t := range []time.Time{absentDue, f.drainRetired(now), f.deadline()} {
			if !t.IsZero() && (wake.IsZero() || t.Before(wake)) {
				wake = t
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
			if now := time.Now(); !retry.IsZero() && !now.Before(retry) {
				retry = time.Time{}
			}
		case d := <-f.msgs:
			refused, gone := f.received(d)
			if gone {
				f.consumersGone(ctx)
			}
			if refused {
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
// whether the server refused a request, so that the next waits, and
// whether the refusal says the consumer is gone.
func (f *fetcher) received(d delivery) (refused, gone bool) {
	l, m := d.lvl, d.m
	if !isStatus(m) {
		if !l.fromConsumer(m) {
			// Logged at the 1st, 2nd, 4th, 8th…: a flood of them is no
			// flood of the log.
			if l.forged++; l.forged&(l.forged-1) == 0 {
				f.log.Warn("dropped a message on the job inbox that no consumer sent", "pool", f.typ, "priority", l.prio, "subject", m.Subject, "reply", m.Reply, "dropped", l.forged)
			}
			return false, false
		}
		// A job comes under its own subject, not its request's: the server
		// fills a consumer's requests in order, so it is the oldest's.
		if d.inbox == l.inbox && len(l.reqs) > 0 {
			if l.polling {
				f.polled--
			}
			l.drop(0, 1)
		}
		l.emptyAt, l.absent = time.Time{}, false
		f.deliver(m)
		return false, false
	}
	i := l.find(d)
	if i < 0 {
		return false, false // for a withdrawn request, or one ended
	}
	code, desc := m.Header.Get(names.HeaderNATSStatus), m.Header.Get(names.HeaderNATSDescription)
	switch {
	case code == "100": // heartbeat
	case code == "404", code == "408": // no jobs (more), or the poll expired: it brings nothing more
		if !l.polling {
			l.emptyAt = time.Now()
		}
		l.absent = false
		l.drop(i, l.reqs[i].n)
	case consumerGone(code, desc) && l.prio != wire.PriorityNormal:
		// Made once jobs of its priority come: asked again after
		// absentFor, the normal consumer is not waited on for it.
		l.drop(i, l.reqs[i].n)
		l.emptyAt, l.absent = time.Now(), true
	case consumerGone(code, desc):
		l.drop(i, l.reqs[i].n)
		return true, true
	default:
		f.log.Warn("request jobs; retrying", "pool", f.typ, "priority", l.prio, "status", code, "description", desc)
		l.drop(i, l.reqs[i].n)
		return true, false
	}
	return false, false
}

// consumerGone reports whether a pull request's status says its consumer
// is no more: deleted under the request (409), or missing when it came,
// which the server answers as no one listening (503).
func consumerGone(code, desc string) bool {
	return code == "503" || code == "409" && strings.EqualFold(desc, "Consumer Deleted")
}

// consumersGone asks for the type's consumers again, once a pull's status
// said one is gone (or not there: a 503 also comes while a clustered
// consumer elects its leader, and the request then finds it, unchanged).
// The inboxes stay: a renewed one drops what the server had set out to
// deliver to the old, which waits out its ack wait unseen; each priority's
// own requests end with their own status. Every priority is probed afresh.
func (f *fetcher) consumersGone(ctx context.Context) {
	if err := f.remake(ctx); err != nil {
		f.log.Warn("the pool's job consumers are gone; asking for them again", "pool", f.typ, "err", err)
		return
	}
	f.log.Info("asked for the pool's job consumers again: a pull found one gone", "pool", f.typ)
	for _, l := range f.levels {
		l.emptyAt = time.Time{}
	}
}
