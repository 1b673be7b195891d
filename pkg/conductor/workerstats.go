package conductor

import (
	"context"
	"encoding/json"
	"maps"
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

// slotKey names a worker slot.
type slotKey struct {
	host, pool string
	index      int
}

// slotSeen is what the sampler last saw of a slot.
type slotSeen struct {
	counters map[string]float64
	at       time.Time // the sample's
	alive    bool      // in the latest sample
}

// statsRoller samples and rolls up; its goroutine (run) owns prev, seen
// and since; mu guards last, which GET /v1/stats reads.
type statsRoller struct {
	prev  map[slotKey]map[string]float64 // each slot's counters at the previous roll-up
	seen  map[slotKey]*slotSeen          // since the previous roll-up
	since time.Time                      // the previous roll-up

	mu   sync.Mutex
	last *Stats
}

func newStatsRoller(now time.Time) *statsRoller {
	return &statsRoller{prev: map[slotKey]map[string]float64{}, seen: map[slotKey]*slotSeen{}, since: now}
}

// counters is a worker's counters with jobs_done among them.
func counters(w client.Worker) map[string]float64 {
	m := make(map[string]float64, len(w.Counters)+1)
	maps.Copy(m, w.Counters)
	m["jobs_done"] = float64(w.JobsDone)
	return m
}

// sample takes the workers heard at now.
func (r *statsRoller) sample(workers []client.Worker, now time.Time) {
	for _, s := range r.seen {
		s.alive = false
	}
	for _, w := range workers {
		k := slotKey{w.Host, w.Pool, w.Index}
		r.seen[k] = &slotSeen{counters: counters(w), at: now, alive: true}
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
		// A slot first seen in this interval has no prev: its counts are
		// its slot's since it started.
		prev := r.prev[k]
		for name, v := range s.counters {
			d := v - prev[name]
			if d < 0 {
				d = v // counters that went back: a slot made again
			}
			e.Diff[name] = d
			st.Agg.Diff[name] += d
			if s.alive {
				st.Agg.Last[name] += v
			}
		}
		sum += e.TimeSpan
		st.Raw = append(st.Raw, e)
		if s.alive {
			r.prev[k] = s.counters
		} else {
			delete(r.prev, k)
		}
	}
	for k := range r.prev {
		if _, ok := r.seen[k]; !ok {
			delete(r.prev, k) // not heard of in the whole interval
		}
	}
	if len(st.Raw) > 0 {
		st.AvgTimeSpan = sum / float64(len(st.Raw))
	}
	slices.SortFunc(st.Raw, func(a, b WorkerStats) int {
		return compareKeys(a.Host+"\x00"+a.Pool, b.Host+"\x00"+b.Pool, a.Index, b.Index)
	})
	r.seen = map[slotKey]*slotSeen{}
	r.since = now
	r.mu.Lock()
	r.last = st
	r.mu.Unlock()
	return st
}

func compareKeys(a, b string, i, j int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return i - j
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
				c.statsRoller.sample(c.Workers(), now)
			case now := <-roll.C:
				c.statsRoller.sample(c.Workers(), now)
				st := c.statsRoller.roll(now)
				if c.cfg.OnStats != nil {
					c.cfg.OnStats(st)
				}
				if data, err := json.Marshal(st); err == nil && len(data) < int(c.nc.MaxPayload()) {
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
