package client

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A host gone silent is listed lost, with its workers in state lost, for
// LostHostKept; heard again, or leaving, it is not; and the lost hosts
// kept are bounded in number, the longest lost forgotten first.
func TestHostRegistry_LostHosts(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{})
	b.publish(t, "h1", Host{Host: "h1", Interval: Duration(time.Second), Workers: []Worker{{Host: "h1", Pool: "p", State: "busy", Job: "j1"}}})
	b.deliver(t, r, 1)
	heard := b.clock
	b.beat(t, r, "h2")
	b.beat(t, r, "h3")
	require.Empty(t, r.lostHosts())

	b.clock = b.clock.Add(4 * time.Second) // all three silent
	b.beat(t, r, "h4")
	lost := r.lostHosts()
	require.Len(t, lost, 3)
	require.Equal(t, "h1", lost[0].Host, "the same time: by id")
	require.Equal(t, heard, lost[0].Lost, "lost: when it was last heard")
	require.Equal(t, []Worker{{Host: "h1", Pool: "p", State: WorkerLost, Job: "j1"}}, lost[0].Workers)
	require.Len(t, r.live(), 1)

	// Heard again: live, not lost. Leaving: neither.
	b.beat(t, r, "h2")
	b.publish(t, "h3", Host{Host: "h3", Interval: Duration(time.Second), Leaving: true})
	b.deliver(t, r, 1)
	lost = r.lostHosts()
	require.Len(t, lost, 1)
	require.Equal(t, "h1", lost[0].Host)

	b.clock = b.clock.Add(LostHostKept + time.Second)
	require.Empty(t, r.lostHosts(), "forgotten after LostHostKept")

	// Bounded: the longest lost go first.
	for i := range maxLostHosts + 10 {
		b.beat(t, r, fmt.Sprintf("x%04d", i))
		b.clock = b.clock.Add(time.Millisecond)
	}
	b.clock = b.clock.Add(4 * time.Second)
	r.live()
	lost = r.lostHosts()
	require.Len(t, lost, maxLostHosts)
	require.Equal(t, fmt.Sprintf("x%04d", maxLostHosts+9), lost[0].Host, "the most recently lost first")
	require.Equal(t, "x0010", lost[len(lost)-1].Host, "the first ten forgotten")
}

// A host cannot list itself lost: the lost time and the lost state of its
// workers are the registry's to set, and are cleared from a heartbeat.
func TestHostRegistry_HeartbeatCannotClaimLost(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{})
	b.publish(t, "h1", Host{Host: "h1", Interval: Duration(time.Second), Lost: b.clock.Add(-time.Hour),
		Workers: []Worker{{Host: "h1", Pool: "p", State: WorkerLost}}})
	b.deliver(t, r, 1)
	live := r.live()
	require.Len(t, live, 1)
	require.True(t, live[0].Lost.IsZero())
	require.Equal(t, "unknown", live[0].Workers[0].State)
	require.Empty(t, r.lostHosts())
}
