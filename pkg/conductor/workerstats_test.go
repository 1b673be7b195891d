package conductor

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// hostsOf groups workers by host, as heartbeats of one run of each
// host's workerd.
func hostsOf(ws []client.Worker) []client.Host {
	var hosts []client.Host
	for _, w := range ws {
		i := slices.IndexFunc(hosts, func(h client.Host) bool { return h.Host == w.Host })
		if i < 0 {
			hosts = append(hosts, client.Host{Host: w.Host, Started: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
			i = len(hosts) - 1
		}
		hosts[i].Workers = append(hosts[i].Workers, w)
	}
	return hosts
}

func worker(host string, index int, jobs int64, counters map[string]float64) client.Worker {
	return client.Worker{Host: host, Pool: "p", Index: index, JobsDone: jobs, Counters: counters}
}

// The roll-up against hand-computed values, over three intervals of 5 s:
// a slot whose process dies mid-interval and is replaced (its counts go
// on: they are the slot's), a host that leaves mid-interval (its slot is
// summed once, marked gone, and never again: okanjo summed a dead
// worker's last report for ever), and the average time span over the
// entries summed (okanjo divided by the count of reports received).
func TestStatsRoller_HandComputed(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	r := newStatsRoller(t0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

	// Interval 1: a0 and a1 on host a, b0 on host b.
	r.sample(hostsOf([]client.Worker{worker("a", 0, 10, map[string]float64{"mails": 3}), worker("a", 1, 4, nil), worker("b", 0, 7, map[string]float64{"mails": 1})}), at(1))
	r.sample(hostsOf([]client.Worker{worker("a", 0, 12, map[string]float64{"mails": 5}), worker("a", 1, 6, nil), worker("b", 0, 9, map[string]float64{"mails": 2})}), at(4))
	st := r.roll(at(5))
	require.Len(t, st.Raw, 3)
	require.Equal(t, map[string]float64{"jobs_done": 12 + 6 + 9, "mails": 5 + 2}, st.Agg.Last)
	require.Equal(t, map[string]float64{"jobs_done": 27, "mails": 7}, st.Agg.Diff, "first seen: all their counts")
	require.Equal(t, 5.0, st.AvgTimeSpan)

	// Interval 2: a0's process dies and is replaced (the slot's counts go
	// on); host b leaves after its first sample.
	r.sample(hostsOf([]client.Worker{worker("a", 0, 13, map[string]float64{"mails": 6}), worker("a", 1, 8, nil), worker("b", 0, 11, map[string]float64{"mails": 4})}), at(6))
	r.sample(hostsOf([]client.Worker{worker("a", 0, 15, map[string]float64{"mails": 6}), worker("a", 1, 9, nil)}), at(8))
	st = r.roll(at(10))
	require.Equal(t, []WorkerStats{
		{Host: "a", Pool: "p", Index: 0, Last: map[string]float64{"jobs_done": 15, "mails": 6}, Diff: map[string]float64{"jobs_done": 3, "mails": 1}, TimeSpan: 5},
		{Host: "a", Pool: "p", Index: 1, Last: map[string]float64{"jobs_done": 9}, Diff: map[string]float64{"jobs_done": 3}, TimeSpan: 5},
		{Host: "b", Pool: "p", Index: 0, Last: map[string]float64{"jobs_done": 11, "mails": 4}, Diff: map[string]float64{"jobs_done": 2, "mails": 2}, TimeSpan: 5, Gone: true},
	}, st.Raw)
	require.Equal(t, map[string]float64{"jobs_done": 15 + 9, "mails": 6}, st.Agg.Last, "a gone slot is not in last")
	require.Equal(t, map[string]float64{"jobs_done": 3 + 3 + 2, "mails": 1 + 2}, st.Agg.Diff, "a gone slot's last counts are in diff, once")
	require.Equal(t, 5.0, st.AvgTimeSpan)

	// Interval 3: nothing from b any more; a1 idle.
	r.sample(hostsOf([]client.Worker{worker("a", 0, 16, map[string]float64{"mails": 6}), worker("a", 1, 9, nil)}), at(12))
	st = r.roll(at(15))
	require.Len(t, st.Raw, 2, "the gone slot is in no roll-up after")
	require.Equal(t, map[string]float64{"jobs_done": 25, "mails": 6}, st.Agg.Last)
	require.Equal(t, map[string]float64{"jobs_done": 1, "mails": 0}, st.Agg.Diff)
	require.Same(t, st, r.latest())
}

// BenchmarkStatsRoll: the cost of one roll-up (five samples, as a 5 s
// interval of 1 s heartbeats makes, then the roll) per worker slot, with
// 1,000 slots of five counters each on 50 hosts.
func BenchmarkStatsRoll(b *testing.B) {
	const slots = 1000
	workers := make([]client.Worker, slots)
	for i := range workers {
		workers[i] = worker(fmt.Sprintf("h%d", i%50), i/50, int64(i), map[string]float64{"a": 1, "b": 2, "c": 3, "d": 4})
	}
	r := newStatsRoller(time.Now())
	now := time.Now()
	for b.Loop() {
		for range 5 {
			for i := range workers {
				workers[i].JobsDone++
			}
			now = now.Add(time.Second)
			r.sample(hostsOf(workers), now)
		}
		r.roll(now)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/slots, "ns/worker")
}
