package conductor

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// Scopes of an Event.
const (
	ScopeWorker = "worker" // the event is about one worker process
	ScopePool   = "pool"   // the event is about a pool on one host
)

// Kinds of Event.
const (
	// Worker events.
	EventWorkerStart   = wire.EventWorkerStart   // a process started; Reason start, restart, recycle, upgrade or resize
	EventWorkerReady   = wire.EventWorkerReady   // a channel worker said ready for the first time
	EventWorkerExit    = wire.EventWorkerExit    // a process ended; Reason, Exit, Code, Signal say how
	EventWorkerMessage = wire.EventWorkerMessage // a worker sent a custom message (Data)

	// Pool events.
	EventPoolFailed    = wire.EventPoolFailed    // crash-loop breaker tripped: restarts paused until RetryAt
	EventPoolRecovered = wire.EventPoolRecovered // restarts allowed again after a failure
	EventPoolDrained   = wire.EventPoolDrained   // a drain finished: no worker runs
	EventPoolResumed   = wire.EventPoolResumed   // a drained pool started again
	EventPoolResized   = wire.EventPoolResized   // Count changed
	EventPoolRecycled  = wire.EventPoolRecycled  // every worker was replaced
	EventPoolUpgraded  = wire.EventPoolUpgraded  // every worker runs the new command line
	EventPoolRollback  = wire.EventPoolRollback  // an upgrade failed its health check and was undone
	EventPoolStopped   = wire.EventPoolStopped   // the pool stopped for good
)

// Reasons a worker started or exited (Event.Reason).
const (
	ReasonStart   = wire.ReasonStart   // the pool started
	ReasonRestart = wire.ReasonRestart // after the previous process ended on its own
	ReasonFailure = wire.ReasonFailure // the process ended on its own (a crash, or no ready in time)
	ReasonRecycle = wire.ReasonRecycle // replaced by age, jobs done, memory or a recycle command
	ReasonUpgrade = wire.ReasonUpgrade // replaced by an upgrade, or a rollback
	ReasonResize  = wire.ReasonResize  // added or removed by a resize
	ReasonStop    = wire.ReasonStop    // stopped by a drain, restart or shutdown
)

// eventBuffer is how many events a subscription holds for a slow reader;
// past that, NATS drops the newest.
const eventBuffer = 4096

// EventFields is what workerd announces of a supervision event: its time,
// kind, host and pool, the worker (Index, PID), and for an exit Reason,
// Exit, Code, Signal, OOM and Uptime (see docs/protocol.md, "Events").
type EventFields = wire.Event

// Event is one supervision event of a pool on one host, or of one of its
// workers, with its Scope (ScopeWorker or ScopePool). It encodes to JSON
// as GET /v1/events sends it (docs/api.md).
type Event struct {
	Scope string `json:"scope"`
	EventFields
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
		var w wire.Event
		if json.Unmarshal(m.Data, &w) != nil {
			continue
		}
		scope := ScopePool
		if m.Sub == workerSub {
			scope = ScopeWorker
		}
		select {
		case out <- Event{Scope: scope, EventFields: w}:
		case <-ctx.Done():
			return
		}
	}
}
