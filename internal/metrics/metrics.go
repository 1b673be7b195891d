// Package metrics exposes a conductor to Prometheus: a Collector that reads
// the pools and workers at scrape time (nothing is counted on the job path),
// and the handler conductord serves at GET /metrics.
package metrics

import (
	"cmp"
	"context"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/conductor-run/conductor/internal/token"
	"github.com/conductor-run/conductor/pkg/client"
)

// Source is what the Collector reads: in conductord, the Conductor's Pools,
// Workers and Storage. A struct of funcs, so that tests can fake it.
type Source struct {
	Pools   func(ctx context.Context) ([]client.Pool, error)
	Workers func() []client.Worker
	// Storage, if set, is how the conductor's store is.
	Storage func() Storage
	// Strays, if set, counts the stray job messages the conductor
	// repaired.
	Strays func() Strays
	// Heartbeats, if set, counts the hosts' heartbeats the conductor
	// dropped, by reason (pkg/client's HeartbeatDrops).
	Heartbeats func() HeartbeatDrops
	// Hosts, if set, are the live hosts, counted in conductor_hosts, and
	// whose pools' histograms of run and queue wait times are summed by
	// type.
	Hosts func() []client.Host
	// Departures, if set, counts the hosts that left or went silent
	// (pkg/client's HostDepartures).
	Departures func() HostDepartures
	// Leader, if set, is what the conductor knows of the election of its
	// namespace's leader: conductor_leader, conductor_conductords and
	// conductor_leader_terms_total.
	Leader func() Leader
	// QueueAges, if set, returns when the oldest job of each type that no
	// host has taken was queued (the zero time: none), of at most limit
	// types (pkg/conductor's OldestQueued): conductor_queue_oldest_seconds.
	// The Collector reads it at most once a second, within 2s.
	QueueAges func(ctx context.Context, limit int) (map[string]time.Time, error)
	// MaxQueueAgeTypes bounds the types QueueAges reads at a scrape: the
	// first in name order. Default DefaultMaxQueueAgeTypes (500).
	MaxQueueAgeTypes int
	// StallAfter is how long a type may have jobs queued or held and no
	// attempt ended before conductor_queue_stalled says 1 (conductord's
	// --stall-after). Default DefaultStallAfter (5m).
	StallAfter time.Duration
	// now is the clock of the queue gauges; tests set it. Default
	// time.Now.
	now func() time.Time
}

// Leader is what a conductord knows of its namespace's election.
type Leader struct {
	Leading bool
	Members int
	Terms   uint64
}

// HostDepartures counts the live hosts conductord dropped since it
// started: left (their workerd said it was stopping) or silent (three
// heartbeats missed).
type HostDepartures struct {
	Left, Silent uint64
}

// HeartbeatDrops counts heartbeats dropped by the registry of hosts since
// conductord started: over its bounds (full), too large (oversize), or not
// a heartbeat of the host it names (malformed).
type HeartbeatDrops struct {
	Full, Oversize, Malformed uint64
}

// Strays counts the stray job messages a conductor repaired since it
// started: messages the job stream kept after their consumer had acked
// past them (pkg/conductor's StrayCounts, in the collector's own terms).
type Strays struct {
	Deleted  uint64 // of jobs that had ended: removed
	Requeued uint64 // of jobs that had not: published again, then removed
}

// Storage is how the conductor's store is (pkg/conductor's
// StorageStatus, in the collector's own terms).
type Storage struct {
	// State is one of StorageStates.
	State                   string
	FreeBytes, ReserveBytes uint64
	BallastBytes            uint64 // room held to give back when the disk is full
	DrainBytesPerJob        uint64 // room kept for the drain of each job queued
	WriteErrors             uint64 // times the store stopped taking writes, since start
	Restarts                uint64 // of JetStream, in-process, since start
	LostMessages            uint64 // found lost at a start, not yet cleared
}

// StorageStates are the states of a store, each a label value of
// conductor_storage_state; ok and degraded are healthy.
var StorageStates = []string{"ok", "degraded", "full", "failed"}

// PoolStates are the states of a pool on a host, each a label value of
// conductor_pool_state; WorkerStates those of a worker slot, each a label
// value of conductor_workers. The reasons behind them are never labels
// (their text is unbounded): GET /v1/pools and /v1/workers carry them.
var (
	PoolStates   = []string{"waiting", "new", "starting", "running", "backoff", "draining", "drained", "failed", "stopping", "stopped"}
	WorkerStates = []string{"starting", "ready", "busy", "recycling", "stopping", "backoff", "exited"}
)

var (
	poolStateDesc = prometheus.NewDesc("conductor_pool_state",
		"Live hosts whose pool of a type is in each state (failed: the crash-loop breaker tripped; backoff: no worker up, waiting to restart).", []string{"type", "state"}, nil)
	workersDesc = prometheus.NewDesc("conductor_workers",
		"Worker slots of a pool on every live host, by state (backoff and exited slots have no process).", []string{"type", "state"}, nil)
	jobsDesc = prometheus.NewDesc("conductor_jobs",
		"Jobs now queued, held by a host (fetched ahead, not taken by a worker) or running, by type.", []string{"type", "status"}, nil)
	supersededDesc = prometheus.NewDesc("conductor_jobs_superseded_total",
		"Late outcomes not kept: attempts that ended after a newer attempt had taken their job, or after it had ended.", []string{"type"}, nil)
	endedDesc = prometheus.NewDesc("conductor_jobs_ended_total",
		"Job attempts ended since the counters were created: succeeded and dead count jobs, failed counts attempts that will be retried.",
		[]string{"type", "status"}, nil)
	poolWorkersDesc = prometheus.NewDesc("conductor_pool_workers",
		"Worker processes of a pool on every live host (slots waiting to restart have none and are not counted).", []string{"type"}, nil)
	workerRSSDesc = prometheus.NewDesc("conductor_worker_rss_bytes",
		"Resident memory of a worker process.", []string{"host", "pool", "index"}, nil)
	workerJobsDesc = prometheus.NewDesc("conductor_worker_jobs_done_total",
		"Jobs a worker slot has finished.", []string{"host", "pool", "index"}, nil)
	workerRestartsDesc = prometheus.NewDesc("conductor_worker_restarts_total",
		"Times a worker slot's process was replaced.", []string{"host", "pool", "index"}, nil)
	runDesc = prometheus.NewDesc("conductor_job_run_seconds",
		"How long attempts ran on a worker, by type, summed over the live hosts since each's workerd started.", []string{"type"}, nil)
	waitDesc = prometheus.NewDesc("conductor_job_queue_wait_seconds",
		"How long jobs waited from queued to their first attempt's start, by type, summed over the live hosts since each's workerd started (hosts' clocks apart add to it).", []string{"type"}, nil)
	lookupDesc = prometheus.NewDesc("conductor_lookup_seconds",
		"How long the workers' lookups that conductord answered took, seen from their hosts (a host's cache hit is not counted), summed over the live hosts since each's workerd started.", nil, nil)
	workerCounterDesc = prometheus.NewDesc("conductor_worker_counter",
		"What the workers of a pool counted (Job.Count, the count op; docs/stats.md), summed over its live workers, by counter (a gauge: a worker may count down, and a pool shrink).", []string{"type", "counter"}, nil)
	scrapeErrorDesc = prometheus.NewDesc("conductor_scrape_error",
		"1 if the job counts could not be read from JetStream at this scrape.", nil, nil)
	storageHealthyDesc = prometheus.NewDesc("conductor_storage_healthy",
		"1 if the store takes new jobs and job states, 0 if it is full (new jobs refused) or failed (no writes).", nil, nil)
	storageStateDesc = prometheus.NewDesc("conductor_storage_state",
		"1 for the store's state now: ok, degraded (messages were lost at a start), full or failed.", []string{"state"}, nil)
	storageFreeDesc = prometheus.NewDesc("conductor_storage_free_bytes",
		"Bytes free on the data directory's filesystem.", nil, nil)
	storageReserveDesc = prometheus.NewDesc("conductor_storage_reserve_bytes",
		"Bytes kept free besides what draining the jobs queued writes; new jobs are refused when they and their drain do not fit.", nil, nil)
	storageBallastDesc = prometheus.NewDesc("conductor_storage_ballast_bytes",
		"Bytes the storage guard holds in its ballast file, to give back if a store meets a full disk.", nil, nil)
	storageDrainDesc = prometheus.NewDesc("conductor_storage_drain_bytes_per_job",
		"Bytes kept free for each job queued: what its queued state and its drain are estimated to write.", nil, nil)
	storageWriteErrorsDesc = prometheus.NewDesc("conductor_storage_write_errors_total",
		"Times the store stopped taking writes after an error (or JetStream was disabled) since conductord started.", nil, nil)
	storageRestartsDesc = prometheus.NewDesc("conductor_storage_jetstream_restarts_total",
		"In-process restarts of JetStream to clear write errors, since conductord started.", nil, nil)
	storageLostDesc = prometheus.NewDesc("conductor_storage_lost_messages",
		"Messages found lost in the store at a start and not yet cleared (docs/reliability.md).", nil, nil)
	straysDesc = prometheus.NewDesc("conductor_jobs_stray_messages_total",
		"Job messages found in the job stream after their consumer had acked past them (a server crash brings them back; docs/reliability.md), since conductord started: deleted (the job had ended) or requeued (published again).",
		[]string{"action"}, nil)
	leaderDesc = prometheus.NewDesc("conductor_leader",
		"1 while this conductord leads its namespace's conductords (does what must happen once: docs/deployment.md, \"Two conductords\"), else 0.", nil, nil)
	conductordsDesc = prometheus.NewDesc("conductor_conductords",
		"The conductords of the namespace alive at the last count, this one included.", nil, nil)
	leaderTermsDesc = prometheus.NewDesc("conductor_leader_terms_total",
		"The terms this conductord has won as leader since it started.", nil, nil)
	hostsDesc = prometheus.NewDesc("conductor_hosts",
		"Live hosts: workerds heard within three of their heartbeat intervals.", nil, nil)
	hostsDepartedDesc = prometheus.NewDesc("conductor_hosts_departed_total",
		"Hosts dropped from the live hosts since conductord started: left (their workerd stopped and said so) or silent (three heartbeats missed: killed, down or cut off).",
		[]string{"reason"}, nil)
	heartbeatsDroppedDesc = prometheus.NewDesc("conductor_heartbeats_dropped_total",
		"Hosts' heartbeats dropped since conductord started (docs/security.md, \"Bounded inputs\"): full (the registry at its bound of hosts or bytes), oversize, malformed.",
		[]string{"reason"}, nil)
)

var storageDescs = []*prometheus.Desc{storageHealthyDesc, storageStateDesc, storageFreeDesc, storageReserveDesc,
	storageBallastDesc, storageDrainDesc, storageWriteErrorsDesc, storageRestartsDesc, storageLostDesc}

// Collector is a prometheus.Collector of a conductor's state.
type Collector struct {
	src     Source
	timeout time.Duration
	stalls  *stallWatch
	ages    *queueAges // nil without Source.QueueAges
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector of src.
func NewCollector(src Source) *Collector {
	now := src.now
	if now == nil {
		now = time.Now
	}
	c := &Collector{src: src, timeout: 5 * time.Second,
		stalls: &stallWatch{after: cmp.Or(src.StallAfter, DefaultStallAfter), now: now}}
	if src.QueueAges != nil {
		c.ages = &queueAges{read: src.QueueAges, max: cmp.Or(src.MaxQueueAgeTypes, DefaultMaxQueueAgeTypes), now: now}
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{jobsDesc, endedDesc, supersededDesc, poolWorkersDesc, poolStateDesc, workersDesc, workerRSSDesc, workerJobsDesc, workerRestartsDesc, workerCounterDesc, scrapeErrorDesc, queueStalledDesc} {
		ch <- d
	}
	if c.ages != nil {
		ch <- queueOldestDesc
		ch <- queueOldestErrorDesc
	}
	if c.src.Departures != nil {
		ch <- hostsDepartedDesc
	}
	if c.src.Leader != nil {
		ch <- leaderDesc
		ch <- conductordsDesc
		ch <- leaderTermsDesc
	}
	if c.src.Storage != nil {
		for _, d := range storageDescs {
			ch <- d
		}
	}
	if c.src.Strays != nil {
		ch <- straysDesc
	}
	if c.src.Heartbeats != nil {
		ch <- heartbeatsDroppedDesc
	}
	if c.src.Hosts != nil {
		ch <- hostsDesc
		ch <- runDesc
		ch <- waitDesc
		ch <- lookupDesc
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	pools, err := c.src.Pools(ctx)
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, failed)
	if err == nil {
		c.stalls.collect(ch, pools)
	}
	if c.ages != nil {
		c.ages.collect(ch)
	}
	for _, p := range pools {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(p.Queued), p.Type, "queued")
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(p.Held), p.Type, "held")
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(p.Running), p.Type, "running")
		ch <- prometheus.MustNewConstMetric(endedDesc, prometheus.CounterValue, float64(p.Succeeded), p.Type, "succeeded")
		ch <- prometheus.MustNewConstMetric(endedDesc, prometheus.CounterValue, float64(p.Failed), p.Type, "failed")
		ch <- prometheus.MustNewConstMetric(endedDesc, prometheus.CounterValue, float64(p.Dead), p.Type, "dead")
		ch <- prometheus.MustNewConstMetric(supersededDesc, prometheus.CounterValue, float64(p.Superseded), p.Type)
		ch <- prometheus.MustNewConstMetric(poolWorkersDesc, prometheus.GaugeValue, float64(p.Workers), p.Type)
		if len(p.Hosts) > 0 {
			collectStates(ch, poolStateDesc, p.Type, PoolStates, func(yield func(string)) {
				for _, h := range p.Hosts {
					yield(h.State)
				}
			})
		}
	}
	workers := c.src.Workers()
	byPool := map[string][]string{}
	for _, w := range workers {
		byPool[w.Pool] = append(byPool[w.Pool], w.State)
	}
	for typ, states := range byPool {
		collectStates(ch, workersDesc, typ, WorkerStates, func(yield func(string)) {
			for _, st := range states {
				yield(st)
			}
		})
	}
	for _, w := range workers {
		labels := []string{w.Host, w.Pool, strconv.Itoa(w.Index)}
		ch <- prometheus.MustNewConstMetric(workerRSSDesc, prometheus.GaugeValue, float64(w.RSS), labels...)
		ch <- prometheus.MustNewConstMetric(workerJobsDesc, prometheus.CounterValue, float64(w.JobsDone), labels...)
		ch <- prometheus.MustNewConstMetric(workerRestartsDesc, prometheus.CounterValue, float64(w.Restarts), labels...)
	}
	// The workers' own counters, by pool: their hosts and indexes are not
	// labels, and a heartbeat's names are checked again here (a host may
	// send any), at most maxCounterSeries a pool.
	counted := map[[2]string]float64{}
	names := map[string]int{} // by pool
	for _, w := range workers {
		taken := 0 // of this worker's names, as workerd bounds them
		for name, v := range w.Counters {
			if taken >= maxCountersPerWorker || len(name) > 64 || token.Check("counter", name) != nil || math.IsInf(v, 0) || math.IsNaN(v) {
				continue
			}
			k := [2]string{w.Pool, name}
			if _, ok := counted[k]; !ok {
				if names[w.Pool] >= maxCounterSeries {
					continue
				}
				names[w.Pool]++
			}
			taken++
			counted[k] += v
		}
	}
	for k, v := range counted {
		ch <- prometheus.MustNewConstMetric(workerCounterDesc, prometheus.GaugeValue, v, k[0], k[1])
	}
	if c.src.Hosts != nil {
		hosts := c.src.Hosts()
		ch <- prometheus.MustNewConstMetric(hostsDesc, prometheus.GaugeValue, float64(len(hosts)))
		collectHistograms(ch, hosts)
	}
	if c.src.Leader != nil {
		l := c.src.Leader()
		leading := 0.0
		if l.Leading {
			leading = 1
		}
		ch <- prometheus.MustNewConstMetric(leaderDesc, prometheus.GaugeValue, leading)
		ch <- prometheus.MustNewConstMetric(conductordsDesc, prometheus.GaugeValue, float64(l.Members))
		ch <- prometheus.MustNewConstMetric(leaderTermsDesc, prometheus.CounterValue, float64(l.Terms))
	}
	if c.src.Departures != nil {
		d := c.src.Departures()
		ch <- prometheus.MustNewConstMetric(hostsDepartedDesc, prometheus.CounterValue, float64(d.Left), "left")
		ch <- prometheus.MustNewConstMetric(hostsDepartedDesc, prometheus.CounterValue, float64(d.Silent), "silent")
	}
	if c.src.Storage != nil {
		collectStorage(ch, c.src.Storage())
	}
	if c.src.Strays != nil {
		s := c.src.Strays()
		ch <- prometheus.MustNewConstMetric(straysDesc, prometheus.CounterValue, float64(s.Deleted), "deleted")
		ch <- prometheus.MustNewConstMetric(straysDesc, prometheus.CounterValue, float64(s.Requeued), "requeued")
	}
	if c.src.Heartbeats != nil {
		d := c.src.Heartbeats()
		ch <- prometheus.MustNewConstMetric(heartbeatsDroppedDesc, prometheus.CounterValue, float64(d.Full), "full")
		ch <- prometheus.MustNewConstMetric(heartbeatsDroppedDesc, prometheus.CounterValue, float64(d.Oversize), "oversize")
		ch <- prometheus.MustNewConstMetric(heartbeatsDroppedDesc, prometheus.CounterValue, float64(d.Malformed), "malformed")
	}
}

// maxHistogramTypes bounds the job types the histograms show, and
// maxHistogramCount the counts summed into one.
const (
	maxHistogramTypes = 1024
	maxHistogramCount = 1 << 62
)

// maxCounterSeries bounds the counters of one pool that
// conductor_worker_counter shows, and maxCountersPerWorker those taken of
// one worker (workerd's own bound).
const (
	maxCounterSeries     = 256
	maxCountersPerWorker = 64
)

// collectStates sends, for typ, one gauge of d per state of known (and
// any other state seen): how many of those each yields are in it.
func collectStates(ch chan<- prometheus.Metric, d *prometheus.Desc, typ string, known []string, each func(yield func(string))) {
	n := make(map[string]int, len(known))
	for _, st := range known {
		n[st] = 0
	}
	each(func(st string) {
		if st != "" {
			n[st]++
		}
	})
	for st, v := range n {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), typ, st)
	}
}

// collectHistograms sums the hosts' pools' run and wait histograms by
// type, and the hosts' lookup histograms, and sends them.
func collectHistograms(ch chan<- prometheus.Metric, hosts []client.Host) {
	type sums struct{ run, wait client.Histogram }
	byType := map[string]*sums{}
	var lookups client.Histogram
	add := func(to *client.Histogram, h *client.Histogram) {
		if h == nil || len(h.Counts) != len(client.HistogramBounds)+1 {
			return // none, or not of these buckets
		}
		// A host's counts are taken whole or not at all: none may make
		// the sum's total wrap (no host counts near 2^63).
		var total uint64
		for _, n := range h.Counts {
			total += n
			if total > maxHistogramCount {
				return
			}
		}
		for _, n := range to.Counts {
			if total += n; total > maxHistogramCount {
				return
			}
		}
		if to.Counts == nil {
			to.Counts = make([]uint64, len(h.Counts))
		}
		for i, n := range h.Counts {
			to.Counts[i] += n
		}
		to.Sum += h.Sum
	}
	for _, h := range hosts {
		add(&lookups, h.Lookups)
		for _, p := range h.Pools {
			if p.Run == nil && p.Wait == nil {
				continue
			}
			s := byType[p.Name]
			if s == nil {
				// A heartbeat's pool names are checked again here (a host
				// may send any), at most maxHistogramTypes of them.
				if len(byType) >= maxHistogramTypes || token.Check("job type", p.Name) != nil {
					continue
				}
				s = &sums{}
				byType[p.Name] = s
			}
			add(&s.run, p.Run)
			add(&s.wait, p.Wait)
		}
	}
	send := func(d *prometheus.Desc, h client.Histogram, labels ...string) {
		if h.Counts == nil {
			return
		}
		buckets := make(map[float64]uint64, len(client.HistogramBounds))
		var total uint64
		for i, n := range h.Counts {
			total += n
			if i < len(client.HistogramBounds) {
				buckets[client.HistogramBounds[i]] = total
			}
		}
		ch <- prometheus.MustNewConstHistogram(d, total, h.Sum, buckets, labels...)
	}
	for typ, s := range byType {
		send(runDesc, s.run, typ)
		send(waitDesc, s.wait, typ)
	}
	send(lookupDesc, lookups)
}

func collectStorage(ch chan<- prometheus.Metric, s Storage) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	healthy := 0.0
	if s.State == "ok" || s.State == "degraded" {
		healthy = 1
	}
	gauge(storageHealthyDesc, healthy)
	for _, st := range StorageStates {
		v := 0.0
		if st == s.State {
			v = 1
		}
		gauge(storageStateDesc, v, st)
	}
	gauge(storageFreeDesc, float64(s.FreeBytes))
	gauge(storageReserveDesc, float64(s.ReserveBytes))
	gauge(storageBallastDesc, float64(s.BallastBytes))
	gauge(storageDrainDesc, float64(s.DrainBytesPerJob))
	gauge(storageLostDesc, float64(s.LostMessages))
	ch <- prometheus.MustNewConstMetric(storageWriteErrorsDesc, prometheus.CounterValue, float64(s.WriteErrors))
	ch <- prometheus.MustNewConstMetric(storageRestartsDesc, prometheus.CounterValue, float64(s.Restarts))
}

// Handler serves the Collector of src, with the Go runtime's and the
// process's own metrics, in the Prometheus text format.
func Handler(src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
