package client

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
)

// TestReview15_HostsBytesBoundsMemory: MaxHostsBytes counts the raw JSON of
// the heartbeats held, but the registry holds them decoded. A heartbeat of
// 10,000 empty workers ("{}," is 3 bytes) decodes to 10,000 Worker structs
// (~200 bytes each): ~70x the bytes counted. With the defaults (10,000
// hosts, 256 MiB counted) that is well over 10 GB held by conductord.
func TestReview15_HostsBytesBoundsMemory(t *testing.T) {
	space, err := subject.New("default")
	require.NoError(t, err)
	cfg := Config{MaxHosts: DefaultMaxHosts, MaxHeartbeat: DefaultMaxHeartbeat, MaxHostPools: DefaultMaxHostPools,
		MaxHostWorkers: DefaultMaxHostWorkers, MaxHostInterval: DefaultMaxHostInterval, MaxHostsBytes: DefaultMaxHostsBytes}
	r := newHostRegistry(cfg, space)
	workers := strings.Repeat("{},", DefaultMaxHostWorkers-1) + "{}"

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const hosts = 40
	for i := range hosts {
		h := fmt.Sprintf("h%d", i)
		data := []byte(`{"host":"` + h + `","workers":[` + workers + `]}`)
		r.receive(&nats.Msg{Subject: space.Host(h), Data: data})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	require.Len(t, r.hosts, hosts, "every heartbeat is within every limit")
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("counted %d bytes held; heap grew by %d bytes (%.0fx)", r.size, grown, float64(grown)/float64(r.size))
	require.LessOrEqual(t, grown, int64(4*r.size),
		"the registry holds far more memory than MaxHostsBytes counts: the bound is on raw JSON, not on what is held")
	runtime.KeepAlive(r)
}
