package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAttack18_HostRegistry_LiveHostCannotClaimLost: Host.Lost is set by
// LostHosts alone, from when conductord last heard the host; a live
// host's heartbeat that carries "lost" itself (a host credential may
// publish any JSON on its own heartbeat subject) must not list it as
// lost in /v1/hosts (conductorctl hosts' LOST column), nor carry a time
// the host made up.
//
// FOUND by the outside attack, fixed since (low): what was wrong: receive decodes the heartbeat into Host, Lost included,
// and keeps it as is: a live host says it was lost at any time it likes,
// and GET /v1/hosts shows it live with lost set (and a client that reads
// Lost as "listed lost" shows it twice). Fix: clear hb.Lost in receive
// (next to the Interval clamp), or keep Lost out of the wire decoding
// (a separate heartbeat type, json:"-" on the wire side).
func TestAttack18_HostRegistry_LiveHostCannotClaimLost(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{})
	forged := time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC)
	b.publish(t, "h1", Host{Host: "h1", Interval: Duration(time.Second), Lost: forged})
	b.deliver(t, r, 1)
	live := r.live()
	require.Len(t, live, 1)
	require.True(t, live[0].Lost.IsZero(), "a live host lists itself lost at %s", live[0].Lost)
	require.Empty(t, r.lostHosts())

	// Gone silent: lost from when conductord last heard it, not from the
	// time the host wrote.
	heard := b.clock
	b.clock = b.clock.Add(4 * time.Second)
	r.live()
	lost := r.lostHosts()
	require.Len(t, lost, 1)
	require.Equal(t, heard, lost[0].Lost)
}
