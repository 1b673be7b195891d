package conductor

import (
	"cmp"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/pkg/client"
)

// The workers' stats (docs/stats.md): conductord samples the workers'
// counters from the hosts' heartbeats every second, and every
// Config.StatsInterval rolls them up, in okanjo-conductor's shape (raw,
// agg.last, agg.diff, avg time span) without its two bugs: a worker gone
// is summed once, in the interval it went, and never again; the average
// time span is over the entries summed.

// Stats is one roll-up of the workers' counters (client.Stats).
type Stats = client.Stats

// WorkerStats is one worker slot's entry of a Stats roll-up
// (client.WorkerStats).
type WorkerStats = client.WorkerStats

// slotKey names a worker slot of one run of its host's workerd (gen, the
// run's start): a workerd started again makes new slots, whose counters
// begin anew.
type slotKey struct {
	host, pool string
	index      int
	gen        int64
}

// slotSeen is what the sampler last saw of a slot.
type slotSeen struct {
	counters map[string]float64
	alive    bool // in the latest sample
}

// prevSeen is a slot's counters at the roll-up that last saw it.
type prevSeen struct {
	counters map[string]float64
	at       time.Time
}

// prevGrace is how long a slot gone keeps its last counters: if its host
// comes back (the same workerd, after a network blip), its counts go on
// from them, not from zero.
const prevGrace = 10 * time.Minute

// maxCounterValue bounds a counter's value the roll-up takes from a
// heartbeat: past it (or not finite), the value is left out, so that no
// sum overflows.
const maxCounterValue = 1e300

// statsRoller samples and rolls up; its goroutine (run) owns prev, seen
// and since; mu guards last, which GET /v1/stats reads.
type statsRoller struct {
	prev  map[slotKey]prevSeen  // each slot's counters at the roll-up that last saw it
	seen  map[slotKey]*slotSeen // since the previous roll-up
	since time.Time             // the previous roll-up

	mu   sync.Mutex
	last *Stats
}

func newStatsRoller(now time.Time) *statsRoller {
	return &statsRoller{prev: map[slotKey]prevSeen{}, seen: map[slotKey]*slotSeen{}, since: now}
}

// counters is a worker's counters with jobs_done among them, but for
// values not finite or past maxCounterValue.
func counters(w client.Worker) map[string]float64 {
	m := make(map[string]float64, len(w.Counters)+1)
	for name, v := range w.Counters {
		if !math.IsNaN(v) && math.Abs(v) <= maxCounterValue {
			m[name] = v
		}
	}
	m["jobs_done"] = float64(w.JobsDone)
	return m
}

// sample takes the workers of the hosts heard at now.
func (r *statsRoller) sample(hosts []client.Host, now time.Time) {
	for _, s := range r.seen {
		s.alive = false
	}
	for _, h := range hosts {
		gen := h.Started.UnixNano()
		for _, w := range h.Workers {
			k := slotKey{w.Host, w.Pool, w.Index, gen}
			r.seen[k] = &slotSeen{counters: counters(w), alive: true}
		}
	}
}

// roll makes the roll-up of the interval ending at now.
func (r *statsRoller) roll(now time.Time) *Stats {
	st := &Stats{At: now.UTC(), Raw: []WorkerStats{}}
	st.Agg.Last, st.Agg.Diff = map[string]float64{}, map[string]float64{}
	span := now.Sub(r.since).Seconds()
	sum := 0.0
	for k, s := range r.seen {
		e := WorkerStats{Host: k.host, Pool: k.pool, Index: k.index, Last: s.counters, Diff: map[string]float64{}, TimeSpan: span, Gone: !s.alive}
		// A slot first seen (or back after prevGrace) has no prev: its
		// counts are its slot's since it started. A counter may go down
		// (a worker may count down): its diff is then negative.
		prev := r.prev[k].counters
		for name, v := range s.counters {
			d := v - prev[name]
			e.Diff[name] = d
			st.Agg.Diff[name] += d
			if s.alive {
				st.Agg.Last[name] += v
			}
		}
		sum += e.TimeSpan
		st.Raw = append(st.Raw, e)
		r.prev[k] = prevSeen{counters: s.counters, at: now}
	}
	for k, p := range r.prev {
		if now.Sub(p.at) > prevGrace {
			delete(r.prev, k)
		}
	}
	if len(st.Raw) > 0 {
		st.AvgTimeSpan = sum / float64(len(st.Raw))
	}
	slices.SortFunc(st.Raw, func(a, b WorkerStats) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Index, b.Index))
	})
	r.seen = map[slotKey]*slotSeen{}
	r.since = now
	r.mu.Lock()
	r.last = st
	r.mu.Unlock()
	return st
}

// statsSample is how often the roller samples the workers' counters: a
// heartbeat's interval.
const statsSample = time.Second

// startStats starts the roller's goroutine: it samples the workers
// heard every statsSample and rolls up every Config.StatsInterval, until
// stopped.
func (c *Conductor) startStats() *startstop.Func {
	c.statsRoller = newStatsRoller(time.Now())
	f := startstop.NewFunc(func(ctx context.Context) {
		sample := time.NewTicker(min(statsSample, c.cfg.StatsInterval))
		defer sample.Stop()
		roll := time.NewTicker(c.cfg.StatsInterval)
		defer roll.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-sample.C:
				c.statsRoller.sample(c.liveHosts(), now)
			case now := <-roll.C:
				c.statsRoller.sample(c.liveHosts(), now)
				st := c.statsRoller.roll(now)
				if c.cfg.OnStats != nil {
					c.cfg.OnStats(st)
				}
				data, err := json.Marshal(st)
				switch {
				case err != nil:
					c.log.Warn("cannot encode the stats roll-up", "err", err)
				case len(data) >= int(c.nc.MaxPayload()):
					c.log.Warn("the stats roll-up is larger than the server's largest message; not published", "bytes", len(data))
				case !c.lead.leading():
					// Each conductord rolls up for its own GET /v1/stats;
					// the leader alone publishes, once per interval.
				default:
					_ = c.nc.Publish(c.space.StatsEvent(), data)
				}
			}
		}
	})
	_ = f.Start(context.Background())
	return f
}

// getStats serves GET /v1/stats: the last roll-up of the workers'
// counters (docs/stats.md); 404 before the first.
func (c *Conductor) getStats(w http.ResponseWriter, _ *http.Request) {
	var st *Stats
	if c.statsRoller != nil {
		st = c.statsRoller.latest()
	}
	if st == nil {
		writeError(w, http.StatusNotFound, "no roll-up yet: the first comes "+c.cfg.StatsInterval.String()+" after the start")
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// latest returns the last roll-up, nil before the first.
func (r *statsRoller) latest() *Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}
