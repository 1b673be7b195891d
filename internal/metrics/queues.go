package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/conductor-run/conductor/pkg/client"
)

// Defaults of the Source's knobs of the queue gauges.
const (
	// DefaultStallAfter is Source.StallAfter's default.
	DefaultStallAfter = 5 * time.Minute
	// DefaultMaxQueueAgeTypes is Source.MaxQueueAgeTypes's default.
	DefaultMaxQueueAgeTypes = 500
	// queueAgeTTL is how long one reading of the queues' oldest jobs
	// serves scrapes, and queueAgeTimeout how long it may take.
	queueAgeTTL     = time.Second
	queueAgeTimeout = 2 * time.Second
)

var (
	queueOldestDesc = prometheus.NewDesc("conductor_queue_oldest_seconds",
		"Age of the oldest job of a type that no host has taken yet (0: none waits; a job waiting out its retry backoff is not counted).", []string{"type"}, nil)
	queueOldestErrorDesc = prometheus.NewDesc("conductor_queue_oldest_error",
		"1 if the oldest queued jobs could not be read from JetStream at this scrape (conductor_queue_oldest_seconds is then left out).", nil, nil)
	queueStalledDesc = prometheus.NewDesc("conductor_queue_stalled",
		"1 if a type has jobs queued or held and none of its attempts has ended for --stall-after (as seen by this conductord's scrapes since it started).", []string{"type"}, nil)
)

// queueAges reads the oldest queued job of each type through
// Source.QueueAges, at most once a queueAgeTTL whatever the scrapes, each
// reading within queueAgeTimeout and of at most max types. mu is held
// through a reading, so that scrapes at once make one.
type queueAges struct {
	read func(ctx context.Context, limit int) (map[string]time.Time, error)
	max  int
	now  func() time.Time

	mu     sync.Mutex
	at     time.Time // of the last reading
	oldest map[string]time.Time
	err    error
}

// collect sends the age of each type's oldest job, or the error gauge.
func (q *queueAges) collect(ch chan<- prometheus.Metric) {
	q.mu.Lock()
	now := q.now()
	if q.at.IsZero() || now.Sub(q.at) >= queueAgeTTL {
		ctx, cancel := context.WithTimeout(context.Background(), queueAgeTimeout)
		q.oldest, q.err = q.read(ctx, q.max)
		cancel()
		now = q.now()
		q.at = now
	}
	oldest, err := q.oldest, q.err
	q.mu.Unlock()
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(queueOldestErrorDesc, prometheus.GaugeValue, failed)
	if err != nil {
		return
	}
	for typ, t := range oldest {
		age := 0.0
		if !t.IsZero() {
			age = max(now.Sub(t).Seconds(), 0) // a server's clock ahead of ours
		}
		ch <- prometheus.MustNewConstMetric(queueOldestDesc, prometheus.GaugeValue, age, typ)
	}
}

// stallWatch tells, from the pools' ended-attempt counters at each
// scrape, which types have a backlog and no attempt ended for after. A
// type's clock starts when a scrape first sees it, again each time its
// counters have moved since the scrape before, and when its backlog
// appears (a type idle for an hour that gets a job has not stalled for
// an hour). mu guards seen.
type stallWatch struct {
	after time.Duration
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]stallEntry
}

type stallEntry struct {
	ended   uint64    // every attempt ended: succeeded, failed, dead, superseded
	since   time.Time // when ended was first seen at its value, or the backlog appeared
	backlog bool      // jobs were queued or held at the scrape
}

// collect sends conductor_queue_stalled of each of pools and forgets the
// types pools no longer has.
func (w *stallWatch) collect(ch chan<- prometheus.Metric, pools []client.Pool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	next := make(map[string]stallEntry, len(pools))
	for _, p := range pools {
		ended := uint64(p.Succeeded + p.Failed + p.Dead + p.Superseded)
		backlog := p.Queued+p.Held > 0
		e, ok := w.seen[p.Type]
		if !ok || e.ended != ended || (backlog && !e.backlog) {
			e = stallEntry{ended: ended, since: now}
		}
		e.backlog = backlog
		next[p.Type] = e
		stalled := 0.0
		if backlog && now.Sub(e.since) >= w.after {
			stalled = 1
		}
		ch <- prometheus.MustNewConstMetric(queueStalledDesc, prometheus.GaugeValue, stalled, p.Type)
	}
	w.seen = next
}
