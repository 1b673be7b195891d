package agent

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/wire"
)

// levels: the pull requests of one job type, one level per priority.
//
// Priorities. Each priority of a job type has a consumer of its own on the
// job stream; the fetcher asks the highest priority that may have jobs
// first, with a no-wait request (a probe) that the server answers at once.
// A priority whose probe came back short is left alone for emptyFor, so
// that a backlog of normal jobs costs one empty probe of high per emptyFor,
// not one per job. When every priority is found empty, the fetcher parks a
// long poll on each: the first job to come, of any priority, takes the
// waiting worker, and once no worker waits the other polls are withdrawn
// (their inboxes renewed), so that no host holds jobs it has no worker for.
//
// A high or low consumer exists only once jobs of its priority have come
// (hostsvc.MakeConsumers): a request that finds none (503, or 409 when it
// was removed under a poll) leaves that priority alone for absentFor, not
// polled, and asks it again then, also while polls wait on the others
// (probeAbsent); the normal consumer's absence is asked of conductord
// (consumersGone).

// emptyFor is how long a priority found without jobs is not asked again
// while a lower one has jobs: a high job queued behind a backlog of normal
// ones waits at most about this long for the next free worker.
const emptyFor = 20 * time.Millisecond

// absentFor is how long a priority whose consumer was not there is not
// asked again. A type's high and low consumers are made only once jobs of
// their priority come (hostsvc.MakeConsumers, and conductord's leader as
// they come): the first high job of a type waits up to about this long,
// and conductord's pass (a second), for a host to find its consumer.
const absentFor = 2 * time.Second

// probeWait bounds the wait for the answer to a probe, which the server
// gives at once unless it restarts.
const probeWait = 2 * time.Second

// level is the pull state of the jobs of one priority. Only the fetcher
// touches it, except sub, which drain and close read under fetcher.mu.
type level struct {
	prio     wire.Priority
	pullSubj string
	// ackMark is in the ack subject of every job of l's consumer:
	// .<stream>.<consumer>. after $JS.ACK (see fromConsumer).
	ackMark string
	forged  uint64 // the messages dropped that no consumer sent
	inbox   string
	sub     *nats.Subscription
	reqs    []pullRequest // outstanding, oldest first
	lastID  uint64        // the last request's id
	credit  int           // jobs requested and not yet come
	polling bool          // reqs are long polls, not probes
	emptyAt time.Time     // when a probe last came back short; zero: has jobs, or unknown
	// absent: the last request found no consumer (one of high or low
	// jobs, made when they come), since emptyAt. Never polled.
	absent bool
	// retired are the renewed inboxes kept until their requests' last
	// deadline, through a host account's import (see newInbox).
	retired []retiredInbox
}

// retiredInbox is a renewed inbox still subscribed to, until its
// requests' deadline.
type retiredInbox struct {
	sub   *nats.Subscription
	until time.Time
}

// pullRequest is one outstanding pull request: its id (the last token of
// its reply subject, under the level's inbox), how many jobs it may still
// bring, and when to stop waiting for its answer.
type pullRequest struct {
	id       string
	n        int
	deadline time.Time
}

// delivery is a message on a level's inbox: a job, or a status answering a
// pull request. inbox tells a renewed inbox's stragglers from the current,
// and id, for a status, the request it answers: the server answers some
// requests at once ("408 Requests Pending", "404 No Messages") while older
// ones still wait, so a status is not always the oldest request's.
type delivery struct {
	lvl   *level
	inbox string
	id    string
	m     *nats.Msg
}

// fromConsumer reports whether m, not a status, is a delivery of l's
// consumer: its reply is that consumer's ack subject, $JS.ACK.<stream>.
// <consumer>.… (or, from newer servers, $JS.ACK.<domain>.<account hash>.
// <stream>.<consumer>.…). Anything else on l's inbox was published there
// by some other client of the account (a reply subject is not private),
// and is no job: a worker would run it, though no consumer handed it out.
func (l *level) fromConsumer(m *nats.Msg) bool {
	r, ok := strings.CutPrefix(m.Reply, "$JS.ACK")
	return ok && strings.Contains(r, l.ackMark)
}

// find returns the index in l.reqs of the request d, a status, answers,
// or -1: one withdrawn, ended, or of a renewed inbox.
func (l *level) find(d delivery) int {
	if d.inbox != l.inbox {
		return -1
	}
	for i, r := range l.reqs {
		if r.id == d.id {
			return i
		}
	}
	return -1
}

// drop forgets n jobs of request i: they will not come.
func (l *level) drop(i, n int) {
	n = min(n, l.reqs[i].n)
	l.credit -= n
	l.reqs[i].n -= n
	if l.reqs[i].n <= 0 {
		l.reqs = slices.Delete(l.reqs, i, i+1)
	}
	if len(l.reqs) == 0 {
		l.credit, l.polling = 0, false
	}
}

// expire drops the requests whose answer is overdue by now.
func (l *level) expire(now time.Time) {
	for i := 0; i < len(l.reqs); {
		if r := l.reqs[i]; !now.Before(r.deadline) {
			l.drop(i, r.n)
			continue
		}
		i++
	}
}

// deadline is the first deadline of the requests of every level (zero if
// none is outstanding).
func (f *fetcher) deadline() (first time.Time) {
	for _, l := range f.levels {
		for _, r := range l.reqs {
			if first.IsZero() || r.deadline.Before(first) {
				first = r.deadline
			}
		}
	}
	return first
}

// knownEmpty reports whether a probe found l empty less than emptyFor
// ago, or without its consumer less than absentFor ago.
func (l *level) knownEmpty(now time.Time) bool {
	if l.emptyAt.IsZero() {
		return false
	}
	if l.absent {
		return now.Sub(l.emptyAt) < absentFor
	}
	return now.Sub(l.emptyAt) < emptyFor
}

// newInbox makes a fresh reply subject for l's pull requests and drains
// the old one, if any: requests the server still holds for the old subject
// lose their interest and deliver nothing more, while jobs already on their
// way to it still arrive. Through a host account's import, a job the
// server had set out to deliver to a request before its interest went
// reaches the host after the drain has ended, and is dropped: it would
// wait out its ack wait (30s) unseen (BenchmarkSecured caught it, about
// one run in twenty: a few dozen jobs held, none in workerd). So there the
// old inbox stays subscribed until its requests' last deadline
// (drainRetired), and what comes to it is taken as any straggler is: a
// withdrawn request may then bring its jobs after all, held ahead.
func (f *fetcher) newInbox(l *level) error {
	inbox := f.nc.NewInbox()
	sub, err := f.nc.Subscribe(inbox+".*", func(m *nats.Msg) {
		f.msgs <- delivery{lvl: l, inbox: inbox, id: strings.TrimPrefix(m.Subject, inbox+"."), m: m}
	})
	if err != nil {
		return fmt.Errorf("subscribe to job deliveries: %w", err)
	}
	var until time.Time
	for _, r := range l.reqs {
		if r.deadline.After(until) {
			until = r.deadline
		}
	}
	f.mu.Lock()
	old := l.sub
	l.inbox, l.sub = inbox, sub
	keep := old != nil && f.viaImport() && time.Now().Before(until)
	if keep {
		l.retired = append(l.retired, retiredInbox{sub: old, until: until})
	}
	f.mu.Unlock()
	l.reqs, l.credit, l.polling = nil, 0, false
	if old != nil && !keep {
		if err := old.Drain(); err != nil {
			f.log.Debug("drain a renewed job inbox", "pool", f.typ, "err", err)
		}
	}
	return nil
}

// viaImport reports whether the pulls go through a host account's
// import.
func (f *fetcher) viaImport() bool { return f.api != "" && f.api != "$JS.API" }

// drainRetired drains the retired inboxes whose requests have ended by
// now, and returns when the next one ends (zero if none is left).
func (f *fetcher) drainRetired(now time.Time) (next time.Time) {
	f.mu.Lock()
	var done []*nats.Subscription
	for _, l := range f.levels {
		kept := l.retired[:0]
		for _, r := range l.retired {
			if now.Before(r.until) {
				kept = append(kept, r)
				if next.IsZero() || r.until.Before(next) {
					next = r.until
				}
				continue
			}
			done = append(done, r.sub)
		}
		l.retired = kept
	}
	f.mu.Unlock()
	for _, sub := range done {
		if err := sub.Drain(); err != nil {
			f.log.Debug("drain a retired job inbox", "pool", f.typ, "err", err)
		}
	}
	return next
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
		if l.absent {
			continue // not polled: no consumer to wait on
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
		if l.absent {
			continue
		}
		if err := f.pull(l, want, true, now); err != nil {
			return err
		}
	}
	f.polled += want
	return nil
}

// probeAbsent asks again, while polls wait on the other priorities, the
// priorities found without a consumer absentFor ago, for as many jobs as
// the polls: their consumer may have been made since. It returns when the
// next one is due (zero if none is).
func (f *fetcher) probeAbsent(now time.Time) (next time.Time) {
	if f.polled == 0 {
		return next
	}
	for _, l := range f.levels {
		if !l.absent || l.credit > 0 {
			continue
		}
		if l.knownEmpty(now) {
			if due := l.emptyAt.Add(absentFor); next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		if err := f.pull(l, f.polled, false, now); err != nil {
			f.log.Warn("request jobs", "pool", f.typ, "priority", l.prio, "err", err)
		}
	}
	return next
}

// pull sends one pull request for n jobs of l: a long poll, or a probe.
func (f *fetcher) pull(l *level, n int, poll bool, now time.Time) error {
	req := fmt.Appendf(nil, `{"batch":%d,"no_wait":true}`, n)
	deadline := now.Add(probeWait)
	if poll {
		req = fmt.Appendf(nil, `{"batch":%d,"expires":%d}`, n, f.expires.Nanoseconds())
		deadline = now.Add(f.expires + 2*time.Second)
	}
	l.lastID++
	id := strconv.FormatUint(l.lastID, 36)
	if err := f.nc.PublishRequest(l.pullSubj, l.inbox+"."+id, req); err != nil {
		return err
	}
	l.reqs = append(l.reqs, pullRequest{id: id, n: n, deadline: deadline})
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
