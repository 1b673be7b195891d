// Package metrics exposes a conductor to Prometheus: a Collector that reads
// the pools and workers at scrape time (nothing is counted on the job path),
// and the handler conductord serves at GET /metrics.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/conductor-run/conductor/pkg/client"
)

// Source is what the Collector reads: in conductord, the Conductor's Pools
// and Workers. A struct of funcs, so that tests can fake it.
type Source struct {
	Pools   func(ctx context.Context) ([]client.Pool, error)
	Workers func() []client.Worker
}

var (
	jobsDesc = prometheus.NewDesc("conductor_jobs",
		"Jobs now queued or running, by type.", []string{"type", "status"}, nil)
	endedDesc = prometheus.NewDesc("conductor_jobs_ended_total",
		"Job attempts ended since the counters were created: succeeded and dead count jobs, failed counts attempts that will be retried.",
		[]string{"type", "status"}, nil)
	poolWorkersDesc = prometheus.NewDesc("conductor_pool_workers",
		"Worker processes of a pool on every live host.", []string{"type"}, nil)
	workerRSSDesc = prometheus.NewDesc("conductor_worker_rss_bytes",
		"Resident memory of a worker process.", []string{"host", "pool", "index"}, nil)
	workerJobsDesc = prometheus.NewDesc("conductor_worker_jobs_done_total",
		"Jobs a worker slot has finished.", []string{"host", "pool", "index"}, nil)
	workerRestartsDesc = prometheus.NewDesc("conductor_worker_restarts_total",
		"Times a worker slot's process was replaced.", []string{"host", "pool", "index"}, nil)
	scrapeErrorDesc = prometheus.NewDesc("conductor_scrape_error",
		"1 if the job counts could not be read from JetStream at this scrape.", nil, nil)
)

// Collector is a prometheus.Collector of a conductor's state.
type Collector struct {
	src     Source
	timeout time.Duration
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector of src.
func NewCollector(src Source) *Collector {
	return &Collector{src: src, timeout: 5 * time.Second}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{jobsDesc, endedDesc, poolWorkersDesc, workerRSSDesc, workerJobsDesc, workerRestartsDesc, scrapeErrorDesc} {
		ch <- d
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
	for _, p := range pools {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(p.Queued), p.Type, "queued")
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(p.Running), p.Type, "running")
		ch <- prometheus.MustNewConstMetric(endedDesc, prometheus.CounterValue, float64(p.Succeeded), p.Type, "succeeded")
		ch <- prometheus.MustNewConstMetric(endedDesc, prometheus.CounterValue, float64(p.Failed), p.Type, "failed")
		ch <- prometheus.MustNewConstMetric(endedDesc, prometheus.CounterValue, float64(p.Dead), p.Type, "dead")
		ch <- prometheus.MustNewConstMetric(poolWorkersDesc, prometheus.GaugeValue, float64(p.Workers), p.Type)
	}
	for _, w := range c.src.Workers() {
		labels := []string{w.Host, w.Pool, strconv.Itoa(w.Index)}
		ch <- prometheus.MustNewConstMetric(workerRSSDesc, prometheus.GaugeValue, float64(w.RSS), labels...)
		ch <- prometheus.MustNewConstMetric(workerJobsDesc, prometheus.CounterValue, float64(w.JobsDone), labels...)
		ch <- prometheus.MustNewConstMetric(workerRestartsDesc, prometheus.CounterValue, float64(w.Restarts), labels...)
	}
}

// Handler serves the Collector of src, with the Go runtime's and the
// process's own metrics, in the Prometheus text format.
func Handler(src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
