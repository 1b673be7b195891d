package client

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
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
	r, err := c.heardHosts(ctx)
	if err != nil {
		return nil, err
	}
	return r.live(), nil
}

// Workers lists every worker of every live host, learnt as Hosts learns
// the hosts.
func (c *Client) Workers(ctx context.Context) ([]Worker, error) {
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

// hostRegistry holds the last heartbeat of every live host. A host that
// misses three heartbeats (or says it is leaving) is dropped. mu guards
// hosts: the heartbeat subscription writes, HTTP handlers and pool commands
// read. complete and now are set at construction and only read after.
type hostRegistry struct {
	mu    sync.Mutex
	hosts map[string]hostEntry
	// complete is when every live host has had the time to announce itself
	// since the registry started listening.
	complete time.Time
	now      func() time.Time
}

type hostEntry struct {
	hb   Host
	seen time.Time
}

// newHostRegistry returns a registry that starts listening now and has heard
// every live host after wait.
func newHostRegistry(wait time.Duration) *hostRegistry {
	return &hostRegistry{hosts: make(map[string]hostEntry), complete: time.Now().Add(wait), now: time.Now}
}

func (r *hostRegistry) receive(m *nats.Msg) {
	var hb Host
	if err := json.Unmarshal(m.Data, &hb); err != nil || hb.Host == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if hb.Leaving {
		delete(r.hosts, hb.Host)
		return
	}
	r.hosts[hb.Host] = hostEntry{hb: hb, seen: r.now()}
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
		if now.Sub(e.seen) > 3*max(time.Duration(e.hb.Interval), time.Second) {
			delete(r.hosts, id)
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
