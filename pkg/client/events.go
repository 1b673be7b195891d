package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/subject"
)

// Scopes of an Event.
const (
	ScopeWorker = "worker" // the event is about one worker process
	ScopePool   = "pool"   // the event is about a pool on one host
)

// Kinds of Event (Event.Kind).
const (
	// Worker events (ScopeWorker).
	EventWorkerStart   = "start"   // a process started; Reason start, restart, recycle, upgrade or resize
	EventWorkerReady   = "ready"   // a channel worker said ready for the first time
	EventWorkerExit    = "exit"    // a process ended; Reason, Exit, Code, Signal, OOM say how
	EventWorkerMessage = "message" // a worker sent a custom message (Data)

	// Pool events (ScopePool).
	EventPoolFailed    = "failed"    // crash-loop breaker tripped: restarts paused until RetryAt
	EventPoolRecovered = "recovered" // restarts allowed again after a failure
	EventPoolDrained   = "drained"   // a drain finished: no worker runs
	EventPoolResumed   = "resumed"   // a drained pool started again
	EventPoolResized   = "resized"   // Count changed
	EventPoolRecycled  = "recycled"  // every worker was replaced
	EventPoolUpgraded  = "upgraded"  // every worker runs the new command line
	EventPoolRollback  = "rollback"  // an upgrade failed its health check and was undone
	EventPoolStopped   = "stopped"   // the pool stopped for good
)

// Reasons a worker started or exited (Event.Reason).
const (
	ReasonStart   = "start"   // the pool started
	ReasonRestart = "restart" // after the previous process ended on its own
	ReasonFailure = "failure" // the process ended on its own (a crash, or no ready in time)
	ReasonRecycle = "recycle" // replaced by age, jobs done, memory or a recycle command
	ReasonUpgrade = "upgrade" // replaced by an upgrade, or a rollback
	ReasonResize  = "resize"  // added or removed by a resize
	ReasonStop    = "stop"    // stopped by a drain, restart or shutdown
)

// eventBuffer is how many events a subscription holds for a slow reader;
// past that, NATS drops the newest.
const eventBuffer = 4096

// Event is one supervision event of a pool on one host, or of one of its
// workers, as workerd announces it (docs/protocol.md, "Events") with its
// Scope. It encodes to JSON as GET /v1/events sends it (docs/api.md).
type Event struct {
	// Scope is ScopeWorker or ScopePool: what the event is about.
	Scope string `json:"scope"`
	// Time is when it happened, and Kind what happened (EventWorkerStart,
	// EventPoolFailed, ...).
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	// Host and Pool name the pool the event is about.
	Host string `json:"host"`
	Pool string `json:"pool"`
	// Index and PID name the worker, for a worker event.
	Index int `json:"index,omitempty"`
	PID   int `json:"pid,omitempty"`
	// Reason says why a worker started or exited (ReasonStart, ...), or why
	// a pool event happened.
	Reason string `json:"reason,omitempty"`
	// Exit describes how a process ended ("exit status 2", "signal:
	// killed"); Code is its exit code (-1 when killed by a signal) and
	// Signal the signal's name, if any.
	Exit   string `json:"exit,omitempty"`
	Code   int    `json:"code,omitempty"`
	Signal string `json:"signal,omitempty"`
	// OOM is set on an exit the kernel's OOM killer caused, as far as
	// workerd can tell: a SIGKILL it did not send ended the process and the
	// host's count of OOM kills rose while it ran.
	OOM bool `json:"oom,omitempty"`
	// Uptime is how long the process ran, for an exit.
	Uptime Duration `json:"uptime,omitempty"`
	// Count is the pool's worker count, for a pool event.
	Count int `json:"count,omitempty"`
	// RetryAt is when a failed pool tries again.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Error explains a failure or a rollback.
	Error string `json:"error,omitempty"`
	// Data is a worker's custom message, for EventWorkerMessage.
	Data json.RawMessage `json:"data,omitempty"`
}

// Events subscribes to the worker and pool events of every host, of pool
// only if pool is not empty, and returns once the subscription is in place.
// The channel delivers the events as they come until ctx ends; then it is
// closed. A goroutine owned by ctx feeds it: cancel ctx to stop it.
//
// Events are not stored: those announced while nobody listens are gone. A
// reader that falls more than 4096 events behind loses the newest ones; an
// event that does not decode is skipped.
func (c *Client) Events(ctx context.Context, pool string) (<-chan Event, error) {
	if err := c.forOperators("Events"); err != nil {
		return nil, err
	}
	workerSubj, poolSubj := c.space.WorkerEvents(), c.space.PoolEvents()
	if pool != "" {
		if err := subject.Token("pool", pool); err != nil {
			return nil, fmt.Errorf("conductor: %w", err)
		}
		workerSubj, poolSubj = c.space.WorkerEvent(pool, "*"), c.space.PoolEvent(pool, "*")
	}
	msgs := make(chan *nats.Msg, eventBuffer)
	workerSub, err := c.nc.ChanSubscribe(workerSubj, msgs)
	if err != nil {
		return nil, fmt.Errorf("conductor: subscribe to worker events: %w", err)
	}
	poolSub, err := c.nc.ChanSubscribe(poolSubj, msgs)
	if err != nil {
		_ = workerSub.Unsubscribe()
		return nil, fmt.Errorf("conductor: subscribe to pool events: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.nc.FlushWithContext(fctx); err != nil {
		_ = workerSub.Unsubscribe()
		_ = poolSub.Unsubscribe()
		return nil, fmt.Errorf("conductor: subscribe to events: %w", err)
	}
	out := make(chan Event)
	go func() {
		defer close(out)
		defer func() { _ = poolSub.Unsubscribe() }()
		defer func() { _ = workerSub.Unsubscribe() }()
		forwardEvents(ctx, msgs, workerSub, out)
	}()
	return out, nil
}

// forwardEvents decodes the messages of the event subscriptions into out
// until ctx ends; a message of workerSub is a worker event, any other a
// pool event.
func forwardEvents(ctx context.Context, msgs <-chan *nats.Msg, workerSub *nats.Subscription, out chan<- Event) {
	for {
		var m *nats.Msg
		select {
		case <-ctx.Done():
			return
		case m = <-msgs:
		}
		var e Event
		if json.Unmarshal(m.Data, &e) != nil {
			continue
		}
		e.Scope = ScopePool
		if m.Sub == workerSub {
			e.Scope = ScopeWorker
		}
		select {
		case out <- e:
		case <-ctx.Done():
			return
		}
	}
}
