package client

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/subject"
)

// Host is what the workerd of one host last announced in its heartbeat:
// the host, its pools and its worker processes.
type Host struct {
	// Host is the host's id (workerd's --host, the hostname by default).
	Host string `json:"host"`
	// PID is workerd's process id, and Started when it started.
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// Interval is how often the host announces itself; a host silent for
	// three intervals is taken for gone.
	Interval Duration `json:"interval"`
	// Leaving is set on the last heartbeat of a workerd that is stopping.
	Leaving bool `json:"leaving,omitempty"`
	// Pools are the host's pools, and Workers their worker processes.
	Pools   []HostPool `json:"pools"`
	Workers []Worker   `json:"workers"`
	// Lookups counts the host's lookups that conductord answered (its
	// cache could not) by how long they took, since workerd started.
	Lookups *Histogram `json:"lookups,omitempty"`
	// Lost, set on a host LostHosts lists, is when it was last heard.
	Lost time.Time `json:"lost,omitzero"`
}

// HostPool is one pool on one host, as its heartbeat describes it.
type HostPool struct {
	// Name is the pool's name: the job type it serves.
	Name string `json:"name"`
	// Count is the number of workers the pool keeps.
	Count int `json:"count"`
	// Protocol is how the pool talks to its workers: channel (fds 3 and 4,
	// docs/protocol.md) or none (a service that takes no jobs).
	Protocol string `json:"protocol"`
	// State is new, waiting (for the job stream), starting (no worker
	// ready yet), running, backoff (no worker up: they wait to restart),
	// draining, drained, failed (the crash-loop breaker tripped, see
	// RetryAt; or the command cannot start, see Error), stopping or
	// stopped.
	State string `json:"state"`
	// Operation is a rolling change in progress: recycle or upgrade.
	Operation string `json:"operation,omitempty"`
	// Cmd is the command line new workers start with.
	Cmd []string `json:"cmd,omitempty"`
	// RetryAt is when a failed pool tries to start workers again.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Error says why the pool failed, or why its last upgrade rolled back.
	Error string `json:"error,omitempty"`
	// Reason says, in one line for people, why the pool is not plainly
	// running (the breaker's verdict and the last exit for failed; how
	// many workers are up for backoff and starting). Empty when all are up.
	Reason string `json:"reason,omitempty"`
	// Held counts the jobs the host holds for the pool that none of its
	// workers has taken yet (fetched ahead); HeldJobs names the first 256.
	Held     int      `json:"held,omitempty"`
	HeldJobs []string `json:"held_jobs,omitempty"`
	// Run counts the pool's attempts on the host by how long they ran;
	// Wait its jobs' first attempts by how long they waited since they
	// were queued. Since the host's workerd started.
	Run  *Histogram `json:"run,omitempty"`
	Wait *Histogram `json:"wait,omitempty"`
}

// HistogramBounds are the upper bounds, in seconds, of a Histogram's
// buckets.
var HistogramBounds = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600}

// Histogram counts durations by bucket: Counts[i] those up to
// HistogramBounds[i] (and over the one before), the last those over every
// bound; Sum is their sum in seconds.
type Histogram struct {
	Counts []uint64 `json:"counts"`
	Sum    float64  `json:"sum"`
}

// Worker describes one worker process (or the slot of one being
// restarted), as GET /v1/workers lists it.
type Worker struct {
	// Host, Pool and Index name the worker's slot: Index counts from 0
	// within the pool on its host.
	Host  string `json:"host"`
	Pool  string `json:"pool"`
	Index int    `json:"index"`
	// PID is the process id, 0 while the slot waits for a new process.
	PID int `json:"pid"`
	// State is starting (not ready yet), ready (idle, or a service process
	// running), busy, recycling (idle until its replacement is ready),
	// stopping, exited (no process) or backoff (waiting to restart).
	State string `json:"state"`
	// RSS is the process's resident memory, in bytes.
	RSS int64 `json:"rss"`
	// JobsDone counts the jobs the slot finished; Restarts the times its
	// process was replaced.
	JobsDone int64 `json:"jobs_done"`
	Restarts int   `json:"restarts"`
	// Job is the id of the job the worker runs, if any.
	Job string `json:"job,omitempty"`
	// Counters are what the slot's processes counted (Job.Count, the
	// count op), by name.
	Counters map[string]float64 `json:"counters,omitempty"`
	// Queued counts the jobs queued in the worker behind Job (prefetch).
	Queued int `json:"queued,omitempty"`
	// Started is when the process started.
	Started time.Time `json:"started,omitzero"`
	// CPU is the user and system CPU time the process has used.
	CPU Duration `json:"cpu,omitempty"`
	// Version counts the pool's command lines: 1 for the one it started
	// with, one more per upgrade.
	Version int `json:"version,omitempty"`
	// LastExit describes how the slot's previous process ended, if any
	// ("exit status 2", "signal: killed"), and LastExitAt when.
	LastExit   string    `json:"last_exit,omitempty"`
	LastExitAt time.Time `json:"last_exit_at,omitzero"`
	// Reason says, in one line for people, why the worker is in its state
	// when that is not plainly healthy (the last exit, its stderr's last
	// line and the restart time for backoff). Empty once it is up.
	Reason string `json:"reason,omitempty"`
}

// Hosts returns what every live host last announced, sorted by host id.
// The hosts are learnt from their heartbeats: the first call of a Client
// (or its first Command) starts listening to them and waits
// Config.HostWait before it trusts its list.
func (c *Client) Hosts(ctx context.Context) ([]Host, error) {
	if err := c.forOperators("Hosts"); err != nil {
		return nil, err
	}
	r, err := c.heardHosts(ctx)
	if err != nil {
		return nil, err
	}
	return r.live(), nil
}

// Workers lists every worker of every live host, learnt as Hosts learns
// the hosts.
func (c *Client) Workers(ctx context.Context) ([]Worker, error) {
	if err := c.forOperators("Workers"); err != nil {
		return nil, err
	}
	r, err := c.heardHosts(ctx)
	if err != nil {
		return nil, err
	}
	return r.workers(), nil
}

// HeardHosts returns what every live host last announced, as heard so
// far, sorted by host id: unlike Hosts it does not wait for HostWait, and
// may miss hosts for that long after the Client starts listening. It is
// nil before the Client listens (Config.ListenHosts, or the first Hosts,
// Workers or Command). conductord's dashboard and GET /v1/pools read it.
func (c *Client) HeardHosts() []Host {
	c.hostsMu.Lock()
	r := c.hosts
	c.hostsMu.Unlock()
	if r == nil {
		return nil
	}
	return r.live()
}

// heardHosts returns the Client's registry of hosts once it has heard
// every live host.
func (c *Client) heardHosts(ctx context.Context) (*hostRegistry, error) {
	r, err := c.hostRegistry()
	if err != nil {
		return nil, err
	}
	if err := r.await(ctx); err != nil {
		return nil, fmt.Errorf("conductor: learn the live hosts: %w", err)
	}
	return r, nil
}

// Bounds of the host registry, the defaults of the Config fields that
// set them (docs/security.md, "Bounded inputs").
const (
	// DefaultMaxHosts is Config.MaxHosts's default.
	DefaultMaxHosts = 10_000
	// DefaultMaxHeartbeat is Config.MaxHeartbeat's default, in bytes.
	DefaultMaxHeartbeat = 1 << 20
	// DefaultMaxHostPools is Config.MaxHostPools's default.
	DefaultMaxHostPools = 1_000
	// DefaultMaxHostWorkers is Config.MaxHostWorkers's default.
	DefaultMaxHostWorkers = 10_000
	// DefaultMaxHostInterval is Config.MaxHostInterval's default.
	DefaultMaxHostInterval = time.Minute
	// DefaultMaxHostsBytes is Config.MaxHostsBytes's default.
	DefaultMaxHostsBytes = 256 << 20
)

// HeartbeatDrops counts the heartbeats a Client's host registry dropped
// since it started listening, by reason.
type HeartbeatDrops struct {
	// Full counts heartbeats of new hosts that came while the registry
	// held Config.MaxHosts live hosts, and heartbeats that would have
	// taken the registry past Config.MaxHostsBytes.
	Full uint64 `json:"full"`
	// Oversize counts heartbeats over Config.MaxHeartbeat bytes, or with
	// more pools or workers than Config.MaxHostPools or MaxHostWorkers.
	Oversize uint64 `json:"oversize"`
	// Malformed counts heartbeats that are not JSON, name no host or
	// another host than their subject's.
	Malformed uint64 `json:"malformed"`
}

// Total is the number of heartbeats dropped, for every reason.
func (d HeartbeatDrops) Total() uint64 { return d.Full + d.Oversize + d.Malformed }

// DroppedHeartbeats returns how many heartbeats the Client's registry of
// hosts dropped, by reason: zero before it listens.
func (c *Client) DroppedHeartbeats() HeartbeatDrops {
	c.hostsMu.Lock()
	r := c.hosts
	c.hostsMu.Unlock()
	if r == nil {
		return HeartbeatDrops{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// HostDepartures counts the live hosts a Client's registry of hosts
// dropped since it started listening, by why.
type HostDepartures struct {
	// Left counts hosts whose workerd said it was stopping (its last
	// heartbeat, Host.Leaving).
	Left uint64 `json:"left"`
	// Silent counts hosts that missed three heartbeats: a workerd killed,
	// a host down or cut off.
	Silent uint64 `json:"silent"`
}

// DepartedHosts returns how many live hosts the Client's registry of
// hosts dropped, by why: zero before it listens. A host gone silent is
// counted when the registry notices, at its next read or heartbeat.
func (c *Client) DepartedHosts() HostDepartures {
	c.hostsMu.Lock()
	r := c.hosts
	c.hostsMu.Unlock()
	if r == nil {
		return HostDepartures{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.departed
}

// hostLimits are the registry's bounds, from Config.
type hostLimits struct {
	hosts, bytes, pools, workers int
	total                        int           // bytes of every heartbeat held
	interval                     time.Duration // the longest interval a host may claim
}

// dropLogEvery is how often, at most, the registry logs the heartbeats it
// dropped.
const dropLogEvery = time.Minute

// pruneEvery is how often, at most, a heartbeat makes the registry forget
// the hosts gone silent.
const pruneEvery = time.Second

// hostRegistry holds the last heartbeat of every live host, at most
// limits.hosts of them and limits.total bytes of heartbeats. A host that
// misses three heartbeats (or says it is leaving) is dropped: when the
// registry is read, and when a heartbeat comes (at most every pruneEvery),
// so that silent hosts go even if nobody reads it. mu guards hosts, size,
// dropped, departed, loggedAt and prunedAt: the heartbeat subscription
// writes, HTTP handlers and pool commands read. The other fields are set
// at construction and only read after.
type hostRegistry struct {
	mu       sync.Mutex
	hosts    map[string]hostEntry
	size     int // the sum of the hosts' sizes
	dropped  HeartbeatDrops
	departed HostDepartures
	// lost are the hosts gone silent, kept for LostHosts (lost.go), and
	// lostSize their heartbeats' bytes; mu guards them too.
	lost     map[string]lostEntry
	lostSize int
	loggedAt time.Time // when drops were last logged
	prunedAt time.Time // when silent hosts were last forgotten on a heartbeat
	// complete is when every live host has had the time to announce itself
	// since the registry started listening.
	complete time.Time
	now      func() time.Time
	space    subject.Space
	limits   hostLimits
	log      *slog.Logger
}

type hostEntry struct {
	hb   Host
	seen time.Time
	size int // the memory the heartbeat takes, as heldSize counts it
}

// newHostRegistry returns a registry that starts listening now and has heard
// every live host after wait.
func newHostRegistry(cfg Config, space subject.Space) *hostRegistry {
	return &hostRegistry{
		hosts: make(map[string]hostEntry), complete: time.Now().Add(cfg.HostWait), now: time.Now,
		space: space, log: cfg.Logger,
		limits: hostLimits{
			hosts: cfg.MaxHosts, bytes: cfg.MaxHeartbeat, pools: cfg.MaxHostPools, workers: cfg.MaxHostWorkers,
			interval: cfg.MaxHostInterval, total: cfg.MaxHostsBytes,
		},
	}
}

// dropReason names why a heartbeat was dropped, for the log.
type dropReason string

const (
	dropFull      dropReason = "full"
	dropOversize  dropReason = "oversize"
	dropMalformed dropReason = "malformed"
)

// receive takes a heartbeat into the registry, or drops it (see
// HeartbeatDrops). Checks that need no lock come first: a heartbeat's
// size before it is decoded, its counts before it is stored.
func (r *hostRegistry) receive(m *nats.Msg) {
	host := r.space.HostOf(m.Subject)
	if len(m.Data) > r.limits.bytes {
		r.drop(dropOversize, host, fmt.Sprintf("%d bytes, over the limit of %d", len(m.Data), r.limits.bytes))
		return
	}
	var hb Host
	if err := json.Unmarshal(m.Data, &hb); err != nil || hb.Host == "" || hb.Host != host {
		r.drop(dropMalformed, host, "not JSON, or not the heartbeat of its subject's host")
		return
	}
	hb.Lost = time.Time{} // the registry's to set, not the host's
	for i := range hb.Workers {
		if hb.Workers[i].State == WorkerLost {
			hb.Workers[i].State = "unknown" // nor a worker's
		}
	}
	if len(hb.Pools) > r.limits.pools || len(hb.Workers) > r.limits.workers {
		r.drop(dropOversize, host, fmt.Sprintf("%d pools and %d workers, over the limits of %d and %d",
			len(hb.Pools), len(hb.Workers), r.limits.pools, r.limits.workers))
		return
	}
	// A host is dropped after three silent intervals: one it claims is
	// taken between 1s and the limit, so that none stays for ever.
	hb.Interval = Duration(min(max(time.Duration(hb.Interval), time.Second), r.limits.interval))
	r.mu.Lock()
	now := r.now()
	if now.Sub(r.prunedAt) >= pruneEvery {
		r.prune(now)
		r.prunedAt = now
	}
	if hb.Leaving {
		if _, known := r.hosts[hb.Host]; known {
			r.departed.Left++
		}
		r.forget(hb.Host)
		r.unlose(hb.Host)
		r.mu.Unlock()
		return
	}
	prev, known := r.hosts[hb.Host]
	size := heldSize(&hb, len(m.Data))
	var why string
	switch {
	case !known && len(r.hosts) >= r.limits.hosts:
		why = fmt.Sprintf("%d live hosts, the limit", r.limits.hosts)
	case r.size-prev.size+size > r.limits.total:
		why = fmt.Sprintf("the heartbeats held would pass the limit of %d bytes", r.limits.total)
	}
	if why != "" {
		r.mu.Unlock()
		r.drop(dropFull, host, why)
		return
	}
	r.size += size - prev.size
	r.hosts[hb.Host] = hostEntry{hb: hb, seen: now, size: size}
	r.unlose(hb.Host) // heard again
	r.mu.Unlock()
}

// drop counts a dropped heartbeat and logs it, if the registry has a
// logger, with the counts so far, at most every dropLogEvery.
func (r *hostRegistry) drop(reason dropReason, host, why string) {
	r.mu.Lock()
	switch reason {
	case dropFull:
		r.dropped.Full++
	case dropOversize:
		r.dropped.Oversize++
	default:
		r.dropped.Malformed++
	}
	now, counts := r.now(), r.dropped
	logNow := r.log != nil && (r.loggedAt.IsZero() || now.Sub(r.loggedAt) >= dropLogEvery)
	if logNow {
		r.loggedAt = now
	}
	r.mu.Unlock()
	if logNow {
		r.log.Warn("dropped a heartbeat; further drops are counted and logged at most once a minute",
			"host", host, "reason", string(reason), "why", why,
			"dropped_full", counts.Full, "dropped_oversize", counts.Oversize, "dropped_malformed", counts.Malformed)
	}
}

// prune forgets the hosts silent for three of their intervals. r.mu is held.
func (r *hostRegistry) prune(now time.Time) {
	for id, e := range r.hosts {
		if expired(e, now) {
			r.departed.Silent++
			r.markLost(id, e, now)
			r.forget(id)
		}
	}
}

// forget drops host. r.mu is held.
func (r *hostRegistry) forget(host string) {
	r.size -= r.hosts[host].size
	delete(r.hosts, host)
}

// expired reports whether e's host has been silent for three of its
// intervals (the interval already clamped by receive).
func expired(e hostEntry, now time.Time) bool {
	return now.Sub(e.seen) > 3*time.Duration(e.hb.Interval)
}

// await blocks until the registry has listened long enough to have heard
// every live host, or ctx ends.
func (r *hostRegistry) await(ctx context.Context) error {
	d := r.complete.Sub(r.now())
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// live returns the heartbeats of the live hosts, sorted by host id, and
// forgets hosts that went silent.
func (r *hostRegistry) live() []Host {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := make([]Host, 0, len(r.hosts))
	for id, e := range r.hosts {
		if expired(e, now) {
			r.departed.Silent++
			r.markLost(id, e, now)
			r.forget(id)
			continue
		}
		out = append(out, e.hb)
	}
	slices.SortFunc(out, func(a, b Host) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// workers lists every worker of every live host.
func (r *hostRegistry) workers() []Worker {
	out := []Worker{}
	for _, hb := range r.live() {
		out = append(out, hb.Workers...)
	}
	return out
}

// running returns the ids of the live hosts that run pool (any pool, for
// AllPools), sorted; with host set, only that one, if it does.
func (r *hostRegistry) running(pool, host string) []string {
	var out []string
	for _, hb := range r.live() {
		if host != "" && hb.Host != host {
			continue
		}
		if pool == AllPools && len(hb.Pools) > 0 || slices.ContainsFunc(hb.Pools, func(p HostPool) bool { return p.Name == pool }) {
			out = append(out, hb.Host)
		}
	}
	return out
}

// heldSize is what the registry counts for a heartbeat of n bytes, hb
// decoded: its strings (at most the bytes received) and the records its
// pools and workers decode into, which a few bytes of JSON each ("{}")
// can make many times larger than the message.
func heldSize(hb *Host, n int) int {
	return n + int(unsafe.Sizeof(*hb)) + len(hb.Pools)*int(unsafe.Sizeof(HostPool{})) + len(hb.Workers)*int(unsafe.Sizeof(Worker{}))
}
