package conductor_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/metrics"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// scrape reads GET /metrics of srv and parses it with the Prometheus text
// parser.
func scrape(t *testing.T, srv *httptest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mfs
}

// sample returns the value of family name's series with labels (name=value
// pairs), checking the family's type, or ok false if there is none.
func sample(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels ...string) (float64, bool) {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	require.Equal(t, typ, mf.GetType(), "type of %s", name)
next:
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		require.Len(t, got, len(labels)/2, "labels of %s: %v", name, got)
		for i := 0; i < len(labels); i += 2 {
			if got[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch typ {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		default:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// waitScrape scrapes srv until ok holds of a scrape, within 30s.
func waitScrape(t *testing.T, srv *httptest.Server, what string, ok func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	var mfs map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		mfs = scrape(t, srv)
		return ok(mfs)
	}, 30*time.Second, 20*time.Millisecond, "no scrape showed %s within 30s", what)
	return mfs
}

// TestMetrics_QueueAgeStallHosts scrapes the metrics conductord serves,
// through a real Conductor's handler: jobs no host takes make the oldest
// queued age grow and, past a short stall-after, the stall gauge 1; a
// host that runs them ends the stall and shows in the host count and the
// workers by state; its stop counts as a host that left.
func TestMetrics_QueueAgeStallHosts(t *testing.T) {
	t.Parallel()
	var c *conductor.Conductor
	src := metrics.ConductorSource(&c, false)
	src.StallAfter = 300 * time.Millisecond
	c, bundle := setup(t, conductor.Config{Metrics: metrics.Handler(src)})
	srv := serve(t, c)
	ctx := context.Background()
	for i := range 3 {
		_, err := c.Client().Submit(ctx, "squares", i)
		require.NoError(t, err)
	}

	gauge, counter := dto.MetricType_GAUGE, dto.MetricType_COUNTER
	mfs := scrape(t, srv)
	first, ok := sample(t, mfs, "conductor_queue_oldest_seconds", gauge, "type", "squares")
	require.True(t, ok, "no conductor_queue_oldest_seconds of squares")
	require.Greater(t, first, 0.0)
	v, _ := sample(t, mfs, "conductor_queue_oldest_error", gauge)
	require.Zero(t, v)
	v, ok = sample(t, mfs, "conductor_hosts", gauge)
	require.True(t, ok)
	require.Zero(t, v)
	v, ok = sample(t, mfs, "conductor_jobs", gauge, "type", "squares", "status", "queued")
	require.True(t, ok)
	require.Equal(t, 3.0, v)
	waitScrape(t, srv, "the oldest job's age grow", func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := sample(t, mfs, "conductor_queue_oldest_seconds", gauge, "type", "squares")
		return v >= first+0.2
	})
	waitScrape(t, srv, "squares stalled", func(mfs map[string]*dto.MetricFamily) bool {
		v, ok := sample(t, mfs, "conductor_queue_stalled", gauge, "type", "squares")
		return ok && v == 1
	})

	self, err := os.Executable()
	require.NoError(t, err)
	a, err := agent.New(agent.Config{
		Conn: bundle.nc, Host: "h1", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Pools: []broker.Spec{{Name: "squares", Count: 2, Cmd: []string{self}}},
	})
	require.NoError(t, err)
	require.NoError(t, a.Start(ctx))
	t.Cleanup(a.Stop)
	// The pool's state and its workers' come in its host's heartbeats: a
	// pool whose workers are ready may be told "starting" in one beat
	// and "running" in the next.
	mfs = waitScrape(t, srv, "the jobs done, the host, its running pool and ready workers", func(mfs map[string]*dto.MetricFamily) bool {
		done, _ := sample(t, mfs, "conductor_jobs_ended_total", counter, "type", "squares", "status", "succeeded")
		hosts, _ := sample(t, mfs, "conductor_hosts", gauge)
		ready, _ := sample(t, mfs, "conductor_workers", gauge, "type", "squares", "state", "ready")
		running, _ := sample(t, mfs, "conductor_pool_state", gauge, "type", "squares", "state", "running")
		run := mfs["conductor_job_run_seconds"].GetMetric()
		return done == 3 && hosts == 1 && ready == 2 && running == 1 && len(run) == 1 && run[0].GetHistogram().GetSampleCount() == 3
	})
	require.Equal(t, dto.MetricType_HISTOGRAM, mfs["conductor_job_run_seconds"].GetType())
	require.Equal(t, dto.MetricType_HISTOGRAM, mfs["conductor_job_queue_wait_seconds"].GetType())
	v, ok = sample(t, mfs, "conductor_queue_stalled", gauge, "type", "squares")
	require.True(t, ok)
	require.Zero(t, v, "jobs ended: no stall")
	v, ok = sample(t, mfs, "conductor_queue_oldest_seconds", gauge, "type", "squares")
	require.True(t, ok, "a type its pool's consumer names stays, at 0")
	require.Zero(t, v)
	v, ok = sample(t, mfs, "conductor_pool_state", gauge, "type", "squares", "state", "running")
	require.True(t, ok)
	require.Equal(t, 1.0, v)
	v, ok = sample(t, mfs, "conductor_workers", gauge, "type", "squares", "state", "busy")
	require.True(t, ok, "every known state has a series")
	require.Zero(t, v)
	// The Go and process collectors are on the same registry.
	v, ok = sample(t, mfs, "go_goroutines", gauge)
	require.True(t, ok)
	require.Greater(t, v, 0.0)
	v, ok = sample(t, mfs, "process_resident_memory_bytes", gauge)
	require.True(t, ok)
	require.Greater(t, v, 0.0)
	_, ok = sample(t, mfs, "process_cpu_seconds_total", counter)
	require.True(t, ok)

	a.Stop()
	mfs = waitScrape(t, srv, "the host gone", func(mfs map[string]*dto.MetricFamily) bool {
		hosts, _ := sample(t, mfs, "conductor_hosts", gauge)
		return hosts == 0
	})
	v, ok = sample(t, mfs, "conductor_hosts_departed_total", counter, "reason", "left")
	require.True(t, ok)
	require.Equal(t, 1.0, v)
	v, ok = sample(t, mfs, "conductor_hosts_departed_total", counter, "reason", "silent")
	require.True(t, ok)
	require.Zero(t, v)
	require.True(t, strings.HasPrefix(mfs["conductor_queue_stalled"].GetHelp(), "1 if a type has jobs queued"))
}
