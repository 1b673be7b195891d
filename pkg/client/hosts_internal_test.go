package client

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
)

// hostsBundle drives a host registry with heartbeats the test publishes on
// a real embedded NATS: the test reads them from a synchronous
// subscription and hands each to the registry, whose clock it sets.
type hostsBundle struct {
	nc    *nats.Conn
	sub   *nats.Subscription
	space subject.Space
	clock time.Time
	logs  *lockedLog
}

// setupHosts returns a registry with cfg's limits (zero: the defaults).
func setupHosts(t *testing.T, cfg Config) (*hostRegistry, *hostsBundle) {
	t.Helper()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	space, err := subject.New("default")
	require.NoError(t, err)
	sub, err := nc.SubscribeSync(space.Hosts())
	require.NoError(t, err)
	require.NoError(t, sub.SetPendingLimits(-1, -1))
	b := &hostsBundle{nc: nc, sub: sub, space: space, clock: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC), logs: &lockedLog{}}
	if cfg.MaxHosts == 0 {
		cfg.MaxHosts = DefaultMaxHosts
	}
	if cfg.MaxHeartbeat == 0 {
		cfg.MaxHeartbeat = DefaultMaxHeartbeat
	}
	if cfg.MaxHostPools == 0 {
		cfg.MaxHostPools = DefaultMaxHostPools
	}
	if cfg.MaxHostWorkers == 0 {
		cfg.MaxHostWorkers = DefaultMaxHostWorkers
	}
	if cfg.MaxHostInterval == 0 {
		cfg.MaxHostInterval = DefaultMaxHostInterval
	}
	if cfg.MaxHostsBytes == 0 {
		cfg.MaxHostsBytes = DefaultMaxHostsBytes
	}
	cfg.Logger = slog.New(slog.NewTextHandler(b.logs, nil))
	r := newHostRegistry(cfg, space)
	r.now = func() time.Time { return b.clock }
	return r, b
}

// publish sends hb on the heartbeat subject of host.
func (b *hostsBundle) publish(t *testing.T, host string, hb any) {
	t.Helper()
	data, ok := hb.([]byte)
	if !ok {
		var err error
		data, err = json.Marshal(hb)
		require.NoError(t, err)
	}
	require.NoError(t, b.nc.Publish(b.space.Host(host), data))
}

// deliver hands the next n heartbeats to r.
func (b *hostsBundle) deliver(t *testing.T, r *hostRegistry, n int) {
	t.Helper()
	for range n {
		m, err := b.sub.NextMsg(10 * time.Second)
		require.NoError(t, err)
		r.receive(m)
	}
}

// beat publishes and delivers the heartbeat of host, interval 1s.
func (b *hostsBundle) beat(t *testing.T, r *hostRegistry, host string) {
	t.Helper()
	b.publish(t, host, Host{Host: host, Interval: Duration(time.Second)})
	b.deliver(t, r, 1)
}

// held returns the number of hosts r holds, expired or not.
func held(r *hostRegistry) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.hosts)
}

type lockedLog struct {
	mu sync.Mutex
	sb strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sb.Write(p)
}

func (l *lockedLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.sb.String(), s)
}

// Past MaxHosts, a new host's heartbeat is dropped and counted (and logged
// once); known hosts still beat; once silent hosts expire, new ones fit.
func TestHostRegistry_MaxHosts(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{MaxHosts: 100})
	for i := range 250 {
		b.publish(t, fmt.Sprintf("h%d", i), Host{Host: fmt.Sprintf("h%d", i), Interval: Duration(time.Second)})
	}
	b.deliver(t, r, 250)
	require.Equal(t, 100, held(r))
	require.Equal(t, HeartbeatDrops{Full: 150}, r.dropped)
	require.Equal(t, 1, b.logs.count("dropped a heartbeat"), "logged once a minute at most")
	require.Equal(t, 1, b.logs.count("reason=full"))

	b.publish(t, "h7", Host{Host: "h7", PID: 42, Interval: Duration(time.Second)})
	b.deliver(t, r, 1)
	require.Equal(t, 42, r.live()[slicesIndex(r.live(), "h7")].PID, "a known host still beats when full")

	b.clock = b.clock.Add(3*time.Second + time.Millisecond)
	b.beat(t, r, "new")
	require.Equal(t, 1, held(r), "the silent hosts went on that heartbeat, with no reader")
	require.Equal(t, "new", r.live()[0].Host)
}

func slicesIndex(hosts []Host, id string) int {
	for i, h := range hosts {
		if h.Host == id {
			return i
		}
	}
	return -1
}

// The default bound, 10,000 hosts, against more fake hosts than that.
func TestHostRegistry_DefaultMaxHosts(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{})
	const n = DefaultMaxHosts + 500
	for i := range n {
		b.publish(t, fmt.Sprintf("fake-%d", i), Host{Host: fmt.Sprintf("fake-%d", i)})
	}
	b.deliver(t, r, n)
	require.Equal(t, DefaultMaxHosts, held(r))
	require.Equal(t, uint64(500), r.dropped.Full)
}

// A silent host goes after three intervals when any heartbeat comes, not
// only when someone reads the registry; a host claiming a ten-year
// interval is taken at MaxHostInterval.
func TestHostRegistry_ExpiryWithoutReaders(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{})
	b.beat(t, r, "short")
	b.publish(t, "forever", Host{Host: "forever", Interval: Duration(10 * 365 * 24 * time.Hour)})
	b.deliver(t, r, 1)
	require.Equal(t, Duration(DefaultMaxHostInterval), r.hosts["forever"].hb.Interval, "clamped")

	b.clock = b.clock.Add(3*time.Second + time.Millisecond)
	b.beat(t, r, "other")
	require.NotContains(t, r.hosts, "short", "pruned on insert")
	require.Contains(t, r.hosts, "forever")

	b.clock = b.clock.Add(3 * DefaultMaxHostInterval)
	b.beat(t, r, "other")
	require.NotContains(t, r.hosts, "forever", "gone three clamped intervals after its last heartbeat")
	require.Equal(t, 1, held(r))
}

// A heartbeat over the size limit, or listing more pools or workers than
// allowed, is dropped and counted, however many come. (The test server
// takes messages up to 1 MiB, conductord's 8 MiB: the size limit is set
// under it here.)
func TestHostRegistry_OversizeHeartbeats(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{MaxHeartbeat: 64 << 10, MaxHostPools: 10, MaxHostWorkers: 20})
	big := Host{Host: "big", Pools: []HostPool{{Name: "p", Cmd: []string{strings.Repeat("x", 64<<10)}}}}
	pools := Host{Host: "pools", Pools: make([]HostPool, 11)}
	workers := Host{Host: "workers", Workers: make([]Worker, 21)}
	for range 100 {
		b.publish(t, "big", big)
		b.publish(t, "pools", pools)
		b.publish(t, "workers", workers)
	}
	b.deliver(t, r, 300)
	require.Zero(t, held(r))
	require.Equal(t, HeartbeatDrops{Oversize: 300}, r.dropped)
	require.Equal(t, 1, b.logs.count("dropped a heartbeat"))

	ok := Host{Host: "ok", Pools: make([]HostPool, 10), Workers: make([]Worker, 20)}
	b.publish(t, "ok", ok)
	b.deliver(t, r, 1)
	require.Equal(t, 1, held(r), "at the limits is fine")
}

// A heartbeat that is not JSON, names no host, or names another host than
// its subject's is dropped and counted.
func TestHostRegistry_MalformedHeartbeats(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{})
	b.publish(t, "h1", []byte("{nope"))
	b.publish(t, "h1", Host{})
	b.publish(t, "h1", Host{Host: "h2"})
	b.deliver(t, r, 3)
	require.Zero(t, held(r))
	require.Equal(t, HeartbeatDrops{Malformed: 3}, r.dropped)
}

// The heartbeats held are bounded in bytes, all hosts together: past
// MaxHostsBytes a new host is dropped, and a known one that grows keeps
// its last heartbeat; a host that leaves gives its room back.
func TestHostRegistry_MaxHostsBytes(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{MaxHostsBytes: 10 << 10})
	pad := strings.Repeat("x", 900)
	for i := range 50 {
		id := fmt.Sprintf("h%d", i)
		b.publish(t, id, Host{Host: id, Pools: []HostPool{{Name: pad}}})
	}
	b.deliver(t, r, 50)
	kept := held(r)
	require.Less(t, kept, 50)
	require.LessOrEqual(t, r.size, 10<<10)
	require.Equal(t, uint64(50-kept), r.dropped.Full)

	b.publish(t, "h0", Host{Host: "h0", PID: 7, Pools: []HostPool{{Name: strings.Repeat("y", 5000)}}})
	b.deliver(t, r, 1)
	require.Zero(t, r.hosts["h0"].hb.PID, "a heartbeat that grows past the room is dropped; the last one stays")

	b.publish(t, "h0", Host{Host: "h0", Leaving: true})
	b.publish(t, "new", Host{Host: "new", Pools: []HostPool{{Name: pad}}})
	b.deliver(t, r, 2)
	require.Contains(t, r.hosts, "new", "the room h0 left")
	require.LessOrEqual(t, r.size, 10<<10)
}

// Drops are logged at most once a minute, with the counts so far.
func TestHostRegistry_DropLogRate(t *testing.T) {
	t.Parallel()
	r, b := setupHosts(t, Config{})
	drop := func() {
		b.publish(t, "h1", []byte("{nope"))
		b.deliver(t, r, 1)
	}
	drop()
	b.clock = b.clock.Add(30 * time.Second)
	drop()
	require.Equal(t, 1, b.logs.count("dropped a heartbeat"))
	b.clock = b.clock.Add(30 * time.Second)
	drop()
	require.Equal(t, 2, b.logs.count("dropped a heartbeat"))
	require.Equal(t, 1, b.logs.count("dropped_malformed=3"))
}
