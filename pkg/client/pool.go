package client

import "time"

// Pool is the view of one job type (or service pool) that GET /v1/pools
// serves: jobs waiting and running now, attempts ended since the counters
// were created, worker processes on every live host, and the state of the
// pool on each host that runs it.
type Pool struct {
	// Type is the job type, the pool's name.
	Type string `json:"type"`
	// Queued counts the jobs waiting in the queue; Held those a host has
	// fetched ahead and none of its workers has taken yet (from the hosts'
	// last heartbeats); Running those a worker has taken. Queued and the
	// sum of Held and Running are read from JetStream at request time.
	Queued int64 `json:"queued"`
	// QueuedByPriority splits Queued by priority (high, normal, low), when
	// jobs other than normal ones are queued.
	QueuedByPriority map[Priority]int64 `json:"queued_by_priority,omitempty"`
	Held             int64              `json:"held"`
	Running          int64              `json:"running"`
	// Succeeded and Dead count the jobs ended so, Failed the failed
	// attempts to be retried, since the counters were created.
	Succeeded uint64 `json:"succeeded"`
	Failed    uint64 `json:"failed"`
	Dead      uint64 `json:"dead"`
	// Superseded counts the late outcomes not kept: attempts that ended
	// after a newer attempt had taken their job, or after it had ended
	// (docs/reliability.md, "Fencing").
	Superseded uint64 `json:"superseded,omitempty"`
	// Workers counts the pool's worker processes on every live host.
	Workers int `json:"workers"`
	// State sums up Hosts: failed if the pool failed on any host; else the
	// state they all share, if they do; else draining if each is draining
	// or drained; else running. Empty when no live host runs the pool.
	State string `json:"state,omitempty"`
	// Reason is the Reason of the first host (by id) whose pool is in
	// State, if it has one: why the pool is not plainly running.
	Reason string `json:"reason,omitempty"`
	// Hosts lists the pool on every live host that runs it, by host id.
	Hosts []PoolHost `json:"hosts,omitempty"`
}

// PoolHost is the state of a pool on one host, from its last heartbeat.
type PoolHost struct {
	// Host is the host's id.
	Host string `json:"host"`
	// State is waiting (not started yet), new, starting (no worker ready
	// yet), running, backoff (no worker up: they wait to restart),
	// draining, drained, failed (restarts paused until RetryAt, or the
	// command cannot start), stopping or stopped.
	State string `json:"state"`
	// Count is the number of workers the pool keeps.
	Count int `json:"count"`
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
	// workers has taken yet.
	Held int `json:"held,omitempty"`
}
