package conductor

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/pkg/client"
)

// The console's feed (docs/console.md): every second, while a console
// stream is open, conductord takes one snapshot of the hosts, pools and
// workers, adds a point per job type to a bounded history, encodes the
// snapshot once as a Server-Sent Event and hands it to every console
// stream (http_console.go). With no stream open it samples every
// consoleIdleInterval, so that a page opened later has charts at once
// without conductord reading JetStream every second for nobody.

// The console's bounds.
const (
	consoleInterval     = time.Second      // a sample while a stream is open
	consoleIdleInterval = 5 * time.Second  // a sample while none is
	consolePoints       = 120              // points kept per job type
	consoleTypes        = 64               // job types kept, the first by name
	consoleWorkers      = 2000             // workers listed in one snapshot
	consoleSubBuffer    = 1                // frames waiting for one stream: the newest
	consoleReadTimeout  = 10 * time.Second // the read of the pools, per sample
)

// consolePoint is one sample of a job type. Succeeded, Failed and Dead are
// the counters of GET /v1/pools (rates are differences of successive
// points); Queued and Running are the counts now; Ran, Mean, P50 and P95
// sum up the attempts the hosts' run-time histograms counted since the
// sample before (seconds; zero when none ran).
type consolePoint struct {
	T         int64   `json:"t"` // Unix milliseconds
	Succeeded uint64  `json:"succeeded"`
	Failed    uint64  `json:"failed"`
	Dead      uint64  `json:"dead"`
	Queued    int64   `json:"queued"`
	Running   int64   `json:"running"`
	Ran       uint64  `json:"ran"`
	Mean      float64 `json:"mean,omitempty"`
	P50       float64 `json:"p50,omitempty"`
	P95       float64 `json:"p95,omitempty"`
}

// consoleHost is a host as the console lists it: its heartbeat without
// the pools and workers, which the snapshot lists on their own.
type consoleHost struct {
	Host     string          `json:"host"`
	PID      int             `json:"pid"`
	Started  time.Time       `json:"started"`
	Interval client.Duration `json:"interval"`
	Leaving  bool            `json:"leaving,omitempty"`
	Pools    int             `json:"pools"`
	Workers  int             `json:"workers"`
}

// consoleSnapshot is the data of one snapshot event.
type consoleSnapshot struct {
	Time    time.Time       `json:"time"`
	Hosts   []consoleHost   `json:"hosts"`
	Pools   []client.Pool   `json:"pools"`
	Workers []client.Worker `json:"workers"`
	// WorkersTotal counts the workers of the live hosts: more than
	// Workers lists when there are over consoleWorkers.
	WorkersTotal int                     `json:"workers_total"`
	Points       map[string]consolePoint `json:"points"`
	// Error says why the pools could not be read (they are then empty).
	Error string `json:"error,omitempty"`
}

// consoleHistory is the data of the history event a stream starts with.
type consoleHistory struct {
	Interval client.Duration           `json:"interval"`
	Points   map[string][]consolePoint `json:"points"`
}

// runKey names the run histogram of one pool on one run of a host's
// workerd.
type runKey struct {
	host string
	gen  int64
	pool string
}

// consoleHub samples and fans the snapshots out. Its goroutine (run)
// owns prevRun; mu guards series, last and subs, which subscribe reads.
type consoleHub struct {
	prevRun map[runKey]client.Histogram // each host's pools' run histograms at the sample before

	mu     sync.Mutex
	series map[string][]consolePoint // by job type, oldest first, at most consolePoints
	last   []byte                    // the last snapshot's frame
	subs   map[chan []byte]struct{}  // the open streams' inputs

	// wake asks the sampler for a snapshot now: a stream opened while it
	// sampled at its idle pace.
	wake chan struct{}
}

func newConsoleHub() *consoleHub {
	return &consoleHub{prevRun: map[runKey]client.Histogram{}, series: map[string][]consolePoint{}, subs: map[chan []byte]struct{}{},
		wake: make(chan struct{}, 1)}
}

// subscribe returns the frames a new stream starts with (the history, and
// the last snapshot if any) and the channel its next snapshots come on;
// unsubscribe ends them.
func (h *consoleHub) subscribe() (first []byte, frames <-chan []byte, unsubscribe func()) {
	ch := make(chan []byte, consoleSubBuffer)
	h.mu.Lock()
	defer h.mu.Unlock()
	hist := consoleHistory{Interval: client.Duration(consoleInterval), Points: make(map[string][]consolePoint, len(h.series))}
	for typ, pts := range h.series {
		hist.Points[typ] = pts // never changed in place: add appends to a copy
	}
	data, _ := json.Marshal(hist) // always encodes: numbers and strings
	first = fmt.Appendf(nil, "event: history\ndata: %s\n\n", data)
	first = append(first, h.last...)
	h.subs[ch] = struct{}{}
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return first, ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// streams counts the open streams.
func (h *consoleHub) streams() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// add keeps snap's points in the history and hands snap's frame to every
// stream. A stream that has not taken the frame before has it replaced:
// a snapshot supersedes the ones before, so a slow client gets fewer of
// them, the newest, and is never cut off for being behind (only for a
// write that does not end: http_console.go).
func (h *consoleHub) add(snap *consoleSnapshot) {
	data, err := json.Marshal(snap)
	if err != nil {
		return // cannot happen: the snapshot holds checked JSON only
	}
	frame := fmt.Appendf(nil, "event: snapshot\ndata: %s\n\n", validJSON(data))
	h.mu.Lock()
	defer h.mu.Unlock()
	for typ, p := range snap.Points {
		old := h.series[typ]
		if len(old) >= consolePoints {
			old = old[len(old)-consolePoints+1:]
		}
		// A new slice each time: subscribe handed the old one out.
		h.series[typ] = append(append(make([]consolePoint, 0, len(old)+1), old...), p)
	}
	for typ := range h.series {
		if _, ok := snap.Points[typ]; !ok && snap.Error == "" {
			delete(h.series, typ) // a type no longer listed (not: the pools unread)
		}
	}
	h.last = frame
	for ch := range h.subs {
		select {
		case ch <- frame:
			continue
		default:
		}
		select { // only the stream's writer takes from ch: it may have, meanwhile
		case <-ch:
		default:
		}
		select {
		case ch <- frame:
		default:
		}
	}
}

// snapshot reads the hosts and pools at now and makes the snapshot, with a
// point per job type (the first consoleTypes by name).
func (h *consoleHub) snapshot(hosts []client.Host, pools []client.Pool, poolsErr error, now time.Time) *consoleSnapshot {
	snap := &consoleSnapshot{Time: now.UTC(), Hosts: []consoleHost{}, Pools: pools, Workers: []client.Worker{}, Points: map[string]consolePoint{}}
	if snap.Pools == nil {
		snap.Pools = []client.Pool{}
	}
	if poolsErr != nil {
		snap.Error = "read the pools: " + poolsErr.Error()
	}
	for _, hb := range hosts {
		snap.Hosts = append(snap.Hosts, consoleHost{Host: hb.Host, PID: hb.PID, Started: hb.Started, Interval: hb.Interval,
			Leaving: hb.Leaving, Pools: len(hb.Pools), Workers: len(hb.Workers)})
		snap.WorkersTotal += len(hb.Workers)
		for _, w := range hb.Workers {
			if len(snap.Workers) < consoleWorkers {
				w.Counters = nil // the stats' business (GET /v1/stats), not the console's
				snap.Workers = append(snap.Workers, w)
			}
		}
	}
	charted := map[string]bool{}
	for _, p := range snap.Pools {
		if len(charted) >= consoleTypes {
			break
		}
		charted[p.Type] = true
	}
	ran := h.ran(hosts, charted)
	for _, p := range snap.Pools {
		if !charted[p.Type] {
			continue
		}
		pt := consolePoint{T: now.UnixMilli(), Succeeded: p.Succeeded, Failed: p.Failed, Dead: p.Dead, Queued: p.Queued, Running: p.Running}
		if d, ok := ran[p.Type]; ok {
			pt.Ran, pt.Mean, pt.P50, pt.P95 = d.total(), d.mean(), d.quantile(0.5), d.quantile(0.95)
		}
		snap.Points[p.Type] = pt
	}
	return snap
}

// ran returns, by pool of types, the attempts the hosts' run histograms
// counted since the sample before. A host first seen (or started again)
// counts from its next sample, not with everything since its start; one
// whose counts went down is left out of this sample. It keeps a histogram
// per host and type charted: the registry's bound on hosts times
// consoleTypes.
func (h *consoleHub) ran(hosts []client.Host, types map[string]bool) map[string]runDiff {
	out := map[string]runDiff{}
	seen := make(map[runKey]client.Histogram, len(h.prevRun))
	for _, hb := range hosts {
		for _, p := range hb.Pools {
			if !types[p.Name] || p.Run == nil || len(p.Run.Counts) != len(client.HistogramBounds)+1 {
				continue
			}
			k := runKey{hb.Host, hb.Started.UnixNano(), p.Name}
			seen[k] = *p.Run
			prev, ok := h.prevRun[k]
			if !ok {
				continue
			}
			d := runDiff{counts: make([]uint64, len(p.Run.Counts)), sum: p.Run.Sum - prev.Sum}
			ok = d.sum >= 0
			for i, n := range p.Run.Counts {
				ok = ok && n >= prev.Counts[i]
				d.counts[i] = n - prev.Counts[i]
			}
			if ok {
				out[p.Name] = out[p.Name].plus(d)
			}
		}
	}
	h.prevRun = seen
	return out
}

// runDiff is a run histogram's growth between two samples.
type runDiff struct {
	counts []uint64
	sum    float64
}

func (d runDiff) plus(e runDiff) runDiff {
	if d.counts == nil {
		return e
	}
	for i := range d.counts {
		d.counts[i] += e.counts[i]
	}
	d.sum += e.sum
	return d
}

func (d runDiff) total() uint64 {
	var n uint64
	for _, c := range d.counts {
		n += c
	}
	return n
}

func (d runDiff) mean() float64 {
	if n := d.total(); n > 0 {
		return d.sum / float64(n)
	}
	return 0
}

// quantile estimates the q-quantile (0 < q < 1) by linear interpolation
// within its bucket; one past every bound reads as the last bound.
func (d runDiff) quantile(q float64) float64 {
	n := d.total()
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var cum float64
	for i, c := range d.counts {
		if c == 0 || cum+float64(c) < rank {
			cum += float64(c)
			continue
		}
		if i >= len(client.HistogramBounds) {
			return client.HistogramBounds[len(client.HistogramBounds)-1]
		}
		lo := 0.0
		if i > 0 {
			lo = client.HistogramBounds[i-1]
		}
		return lo + (client.HistogramBounds[i]-lo)*(rank-cum)/float64(c)
	}
	return client.HistogramBounds[len(client.HistogramBounds)-1]
}

// startConsole starts the console's sampler: a snapshot every
// consoleInterval while a stream is open, every consoleIdleInterval while
// none is, until stopped. A stream that opens (wake) has the sample taken
// at once if the last is consoleInterval old, else consoleInterval after
// the last: points closer than that would make rates of the counters'
// steps (they move when the job ends are saved, every 200ms), spikes in
// the history every page shares.
func (c *Conductor) startConsole() *startstop.Func {
	c.console = newConsoleHub()
	f := startstop.NewFunc(func(ctx context.Context) {
		t := time.NewTimer(0)
		defer t.Stop()
		var last time.Time // of the last sample
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.console.wake:
				if wait := consoleInterval - time.Since(last); wait > 0 {
					t.Reset(wait)
					continue
				}
				last = time.Now()
				c.consoleSample(ctx, last)
				t.Reset(consoleInterval)
			case now := <-t.C:
				last = now
				c.consoleSample(ctx, now)
				if c.console.streams() > 0 {
					t.Reset(consoleInterval)
				} else {
					t.Reset(consoleIdleInterval)
				}
			}
		}
	})
	_ = f.Start(context.Background())
	return f
}

// consoleSample takes one snapshot and hands it out.
func (c *Conductor) consoleSample(ctx context.Context, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, consoleReadTimeout)
	defer cancel()
	pools, err := c.Pools(ctx)
	c.console.add(c.console.snapshot(c.liveHosts(), pools, err, now))
	if c.onConsoleSample != nil {
		c.onConsoleSample()
	}
}
