package metrics

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// TestReview17a_StallNotOnANewBacklog: a type idle (nothing queued, no
// attempt ending) for longer than StallAfter that gets a job is not
// stalled at once: its clock starts when the backlog appears. It read
// stalled at the first scrape that saw the job queued, since its counters
// had not moved for the whole idle time, and the alert fired on the
// first job after every quiet hour.
func TestReview17a_StallNotOnANewBacklog(t *testing.T) {
	t.Parallel()
	clk := newClock()
	pools := []client.Pool{{Type: "a", Succeeded: 10}}
	c := NewCollector(Source{
		Pools:      func(context.Context) ([]client.Pool, error) { return pools, nil },
		Workers:    func() []client.Worker { return nil },
		StallAfter: time.Minute,
		now:        clk.now,
	})
	stalled := func() string {
		out, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, "conductor_queue_stalled")
		require.NoError(t, err)
		return strings.TrimSpace(string(out[strings.LastIndexByte(strings.TrimSpace(string(out)), '\n')+1:]))
	}
	require.Equal(t, `conductor_queue_stalled{type="a"} 0`, stalled(), "idle")
	clk.add(time.Hour)
	require.Equal(t, `conductor_queue_stalled{type="a"} 0`, stalled(), "idle an hour")
	pools[0].Queued = 1 // a job comes
	require.Equal(t, `conductor_queue_stalled{type="a"} 0`, stalled(), "a job queued a moment ago is no stall")
	clk.add(time.Minute)
	require.Equal(t, `conductor_queue_stalled{type="a"} 1`, stalled(), "queued a minute, nothing ended")
	pools[0].Queued, pools[0].Succeeded = 0, 11
	require.Equal(t, `conductor_queue_stalled{type="a"} 0`, stalled())
}
