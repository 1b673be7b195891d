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

// TestHostRegistry_BytesBoundMemory: MaxHostsBytes counts what the
// heartbeats take decoded, not their JSON: a heartbeat of 10,000 empty
// workers ("{}," is 3 bytes) decodes to 10,000 Worker records, about 70
// times its size, and counts so.
func TestHostRegistry_BytesBoundMemory(t *testing.T) {
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
		// A minute's interval: under the race detector the 40 decodes
		// take seconds, and a host of a second's would be forgotten
		// before the last is in.
		data := []byte(`{"host":"` + h + `","interval":"1m","workers":[` + workers + `]}`)
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
