package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/lookup"
)

// lookupTiming is what lookupbench answers.
type lookupTiming struct {
	N     int   `json:"n"`
	P50NS int64 `json:"p50_ns"`
	P99NS int64 `json:"p99_ns"`
	NS    int64 `json:"ns"`
}

func (t lookupTiming) String() string {
	return fmt.Sprintf("p50 %.1fµs p99 %.1fµs", float64(t.P50NS)/1e3, float64(t.P99NS)/1e3)
}

// BenchmarkLookups measures a lookup's round trip from a worker process
// (lookupbench, under workerd, conductord's lookup service behind it),
// against the baseline of the same run: a raw NATS request/reply, the
// requester a process of its own (lookupbench raw), the responder in the
// server's process (this one's, an embedded server). In rounds, so that
// each figure's pairs interleave:
//   - raw: the baseline's p50 and p99;
//   - uncached: gets of keys the host never read (workerd asks
//     conductord, which answers from its memory), p50 and p99, and the
//     ratio of the p50 to raw's;
//   - cold: the same of keys conductord never read either (it reads the
//     bucket);
//   - cached: gets of one key, answered by workerd's cache;
//
// then lookups/s with 16 workers, cached and uncached. Run it with make
// bench; figures go to docs/benchmarks.md.
func BenchmarkLookups(b *testing.B) {
	const (
		rounds   = 5
		perRound = 2000
		workers  = 16
	)
	for range b.N {
		ns := natstest.Server(b)
		echo := natstest.Conn(b, ns)
		_, err := echo.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond([]byte(`{"value":{"eur":12.5},"rev":1}`)) })
		require.NoError(b, err)
		require.NoError(b, echo.Flush())
		rawURL := ns.ClientURL()

		c := newCluster(b)
		c.workerd("bench", fmt.Sprintf("name=lookupbench,count=%d,cmd=%s", workers, filepath.Join(bin, "lookupbench")))
		c.waitWorkers("lookupbench", workers)
		nc, err := nats.Connect(c.natsURL())
		require.NoError(b, err)
		b.Cleanup(nc.Close)
		lc := lookup.NewClient(nc, "conductor.default.lookup")
		keys := rounds*(perRound+200) + workers*(perRound+200) + 10
		// k…: read once by another client, so that conductord's service
		// holds them (a host's miss answered from its memory); c…: never
		// read (a miss of the service too).
		setKeys(b, lc, "k", keys, true)
		setKeys(b, lc, "c", rounds*(perRound+200), false)

		var raws, uncached, cold, cached []lookupTiming
		from := 0
		for range rounds {
			raws = append(raws, rawRoundTrip(b, rawURL, perRound))
			uncached = append(uncached, c.lookupBench(b, fmt.Sprintf(`{"do":"uncached","n":%d,"from":%d}`, perRound, from)))
			cold = append(cold, c.lookupBench(b, fmt.Sprintf(`{"do":"uncached","n":%d,"from":%d,"prefix":"c"}`, perRound, from)))
			from += perRound + 200
			cached = append(cached, c.lookupBench(b, fmt.Sprintf(`{"do":"cached","n":%d}`, 10*perRound)))
		}
		for i := range rounds {
			b.Logf("round %d: raw %v | uncached %v (%.2fx raw) | cold %v (%.2fx raw) | cached %v", i+1, raws[i], uncached[i],
				float64(uncached[i].P50NS)/float64(raws[i].P50NS), cold[i], float64(cold[i].P50NS)/float64(raws[i].P50NS), cached[i])
		}
		b.ReportMetric(p50Ratio(b, "cold", cold, raws), "cold/raw_p50")
		b.ReportMetric(medianOf(cold, func(t lookupTiming) int64 { return t.P50NS })/1e3, "cold_p50_us")
		b.ReportMetric(p50Ratio(b, "uncached", uncached, raws), "uncached/raw_p50")
		b.ReportMetric(medianOf(raws, func(t lookupTiming) int64 { return t.P50NS })/1e3, "raw_p50_us")
		b.ReportMetric(medianOf(uncached, func(t lookupTiming) int64 { return t.P50NS })/1e3, "uncached_p50_us")
		b.ReportMetric(medianOf(uncached, func(t lookupTiming) int64 { return t.P99NS })/1e3, "uncached_p99_us")
		b.ReportMetric(medianOf(cached, func(t lookupTiming) int64 { return t.P50NS })/1e3, "cached_p50_us")
		b.ReportMetric(medianOf(cached, func(t lookupTiming) int64 { return t.P99NS })/1e3, "cached_p99_us")

		// 16 workers at once.
		rate := func(payload func(w int) string) float64 {
			var wg sync.WaitGroup
			results := make([]lookupTiming, workers)
			start := time.Now()
			for w := range workers {
				wg.Go(func() { results[w] = c.lookupBench(b, payload(w)) })
			}
			wg.Wait()
			total := 0
			for _, r := range results {
				total += r.N
			}
			return float64(total) / time.Since(start).Seconds()
		}
		cachedRate := rate(func(int) string { return fmt.Sprintf(`{"do":"cached","n":%d}`, 10*perRound) })
		uncachedRate := rate(func(w int) string {
			return fmt.Sprintf(`{"do":"uncached","n":%d,"from":%d}`, perRound, from+w*(perRound+200))
		})
		b.Logf("16 workers: %.0f cached lookups/s, %.0f uncached lookups/s (jobs' overhead included)", cachedRate, uncachedRate)
		b.ReportMetric(cachedRate, "cached_lookups/s")
		b.ReportMetric(uncachedRate, "uncached_lookups/s")
	}
}

// setKeys sets <prefix>0 … <prefix>n-1 in lookup bench, and <prefix>,
// and reads each once if read.
func setKeys(b *testing.B, lc *lookup.Client, prefix string, n int, read bool) {
	var wg sync.WaitGroup
	const par = 16
	for p := range par {
		wg.Go(func() {
			for i := p; i <= n; i += par {
				key := prefix + strconv.Itoa(i)
				if i == n {
					key = prefix
				}
				_, err := lc.Set(b.Context(), "bench", key, json.RawMessage(`{"eur":12.5}`))
				require.NoError(b, err)
			}
		})
	}
	wg.Wait()
	if !read {
		return
	}
	for p := range par {
		wg.Go(func() {
			for i := p; i < n; i += par {
				_, _, err := lc.Get(b.Context(), "bench", prefix+strconv.Itoa(i))
				require.NoError(b, err)
			}
		})
	}
	wg.Wait()
}

// lookupBench runs a lookupbench job and returns its timing.
func (c *cluster) lookupBench(b *testing.B, payload string) lookupTiming {
	var j client.Job
	require.Equal(b, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/lookupbench?wait=5m", payload, nil, &j))
	require.Equal(b, "succeeded", string(j.Status), "%s: %s", payload, j.Error)
	var t lookupTiming
	require.NoError(b, json.Unmarshal(j.Result, &t))
	return t
}

// rawRoundTrip runs lookupbench raw against url.
func rawRoundTrip(b *testing.B, url string, n int) lookupTiming {
	out, err := exec.Command(filepath.Join(bin, "lookupbench"), "raw", url, strconv.Itoa(n)).Output()
	require.NoError(b, err)
	var t lookupTiming
	require.NoError(b, json.Unmarshal(out, &t))
	return t
}

// p50Ratio logs and returns the median of the ratios of what's p50 to
// the baseline's of the same round.
func p50Ratio(b *testing.B, what string, ts, raws []lookupTiming) float64 {
	ratios := make([]float64, len(ts))
	for i := range ts {
		ratios[i] = float64(ts[i].P50NS) / float64(raws[i].P50NS)
	}
	lo, med, hi := spread(ratios)
	b.Logf("%s p50 / raw p50: median %.2f (%.2f–%.2f)", what, med, lo, hi)
	return med
}

func spread(xs []float64) (lo, med, hi float64) {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

func medianOf(ts []lookupTiming, f func(lookupTiming) int64) float64 {
	xs := make([]float64, len(ts))
	for i, t := range ts {
		xs[i] = float64(f(t))
	}
	_, med, _ := spread(xs)
	return med
}
