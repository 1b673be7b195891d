package conductor

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// Found by an outside review: a host that misses heartbeats long enough to leave the live
// hosts at a roll (a network blip of a few seconds) and then comes back
// with the same workerd (its slots' counters unchanged, going on) has its
// whole counts summed into agg.diff a second time: the roll-up forgot its
// prev when it marked the slot gone, and takes the slot back as first
// seen. docs/stats.md: a slot gone is "included once".
func TestStatsRoller_HostBackAfterABlipCountedOnce(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	r := newStatsRoller(t0)

	r.sample(hostsOf([]client.Worker{worker("a", 0, 100, nil)}), at(4))
	st := r.roll(at(5))
	require.Equal(t, 100.0, st.Agg.Diff["jobs_done"])

	// Interval 2: heard once, then missing at the roll.
	r.sample(hostsOf([]client.Worker{worker("a", 0, 102, nil)}), at(6))
	r.sample(nil, at(10))
	st = r.roll(at(10))
	require.Equal(t, 2.0, st.Agg.Diff["jobs_done"])

	// Interval 3: the same workerd is back; its slot did 1 job more.
	r.sample(hostsOf([]client.Worker{worker("a", 0, 103, nil)}), at(14))
	st = r.roll(at(15))
	require.Equal(t, 1.0, st.Agg.Diff["jobs_done"], "the host's 102 jobs done before the blip are summed again")
}

// Found by an outside review: counters may count down (the count op takes any finite
// increment; conductor_worker_counter is a gauge because "a worker may
// count down"), but the roll-up takes any decrease for a slot made again
// and reports the counter's whole value as its diff: a queue_depth that
// went from 5 to 3 shows diff 3, not -2.
func TestStatsRoller_CountDownIsANegativeDiff(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	r := newStatsRoller(t0)
	r.sample(hostsOf([]client.Worker{worker("a", 0, 1, map[string]float64{"depth": 5})}), t0.Add(time.Second))
	r.roll(t0.Add(5 * time.Second))
	r.sample(hostsOf([]client.Worker{worker("a", 0, 1, map[string]float64{"depth": 3})}), t0.Add(6*time.Second))
	st := r.roll(t0.Add(10 * time.Second))
	require.Equal(t, -2.0, st.Agg.Diff["depth"], "a count down is not a slot made again")
}

// Found by an outside review: the heartbeats' counters are any JSON numbers (conductord
// checks neither their names nor their values): two slots of a counter
// near MaxFloat64 sum to +Inf in agg, and the roll-up can then not be
// encoded: it is never published on events.stats (the error is dropped)
// and GET /v1/stats cannot answer, for every operator, because of one
// host (or one worker's counter).
func TestStatsRoller_ValuesPastAFloatLeftOut(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	r := newStatsRoller(t0)
	r.sample(hostsOf([]client.Worker{
		worker("a", 0, 1, map[string]float64{"x": math.MaxFloat64}),
		worker("a", 1, 1, map[string]float64{"x": math.MaxFloat64}),
	}), t0.Add(time.Second))
	st := r.roll(t0.Add(5 * time.Second))
	_, err := json.Marshal(st)
	require.NoError(t, err, "the roll-up cannot be published nor served")
}
