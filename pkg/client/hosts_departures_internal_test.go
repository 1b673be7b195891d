package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The registry counts the hosts it drops: those that say they leave, and
// those that go silent, noticed on a heartbeat of another host or on a
// read. A leaving host it never held is not counted.
func TestHostRegistry_Departures(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{})
	for _, h := range []string{"h1", "h2", "h3", "h4"} {
		b.beat(t, r, h)
	}
	b.publish(t, "h1", Host{Host: "h1", Interval: Duration(time.Second), Leaving: true})
	b.publish(t, "stranger", Host{Host: "stranger", Interval: Duration(time.Second), Leaving: true})
	b.deliver(t, r, 2)
	require.Equal(t, HostDepartures{Left: 1}, r.departed)

	b.clock = b.clock.Add(2 * time.Second)
	b.beat(t, r, "h4")
	b.clock = b.clock.Add(1500 * time.Millisecond) // h2 and h3 silent past 3s, h4 not
	require.Len(t, r.live(), 1)
	require.Equal(t, HostDepartures{Left: 1, Silent: 2}, r.departed)
	b.clock = b.clock.Add(3 * time.Second)
	b.beat(t, r, "h5")
	require.Equal(t, HostDepartures{Left: 1, Silent: 3}, r.departed, "h4, noticed on h5's heartbeat")
}
