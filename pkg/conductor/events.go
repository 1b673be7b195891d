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

// Event is one supervision event of a pool on one host, or of one of its
// workers. It encodes to JSON as GET /v1/events sends it (docs/api.md).
type Event struct {
	// Scope is ScopeWorker or ScopePool.
	Scope string
	Time  time.Time
	// Kind is one of the Event* constants of the Scope.
	Kind string
	Host string
	Pool string
	// Index and PID name the worker, for a worker event.
	Index int
	PID   int
	// Reason says why a worker started or exited (one of the Reason*
	// constants), or why a pool event happened.
	Reason string
	// Exit describes how a process ended ("exit status 2", "signal:
	// killed"); Code is its exit code (-1 when killed by a signal) and
	// Signal the signal's name, if any.
	Exit   string
	Code   int
	Signal string
	// Uptime is how long the process ran, for an exit.
	Uptime time.Duration
	// Count is the pool's worker count, for a pool event.
	Count int
	// RetryAt is when a failed pool tries again.
	RetryAt time.Time
	// Error explains a failure or a rollback.
	Error string
	// Data is a worker's custom message, for EventWorkerMessage.
	Data json.RawMessage
}

// scopedEvent is the JSON form of an Event: the wire event and its scope.
type scopedEvent struct {
	Scope string `json:"scope"`
	wire.Event
}

// MarshalJSON implements json.Marshaler.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(scopedEvent{Scope: e.Scope, Event: wire.Event{
		Time: e.Time, Kind: e.Kind, Host: e.Host, Pool: e.Pool, Index: e.Index, PID: e.PID,
		Reason: e.Reason, Exit: e.Exit, Code: e.Code, Signal: e.Signal, Uptime: wire.Duration(e.Uptime),
		Count: e.Count, RetryAt: e.RetryAt, Error: e.Error, Data: e.Data,
	}})
}

// UnmarshalJSON implements json.Unmarshaler.
func (e *Event) UnmarshalJSON(b []byte) error {
	var s scopedEvent
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*e = eventOf(s.Scope, s.Event)
	return nil
}

func eventOf(scope string, w wire.Event) Event {
	return Event{
		Scope: scope, Time: w.Time, Kind: w.Kind, Host: w.Host, Pool: w.Pool, Index: w.Index, PID: w.PID,
		Reason: w.Reason, Exit: w.Exit, Code: w.Code, Signal: w.Signal, Uptime: time.Duration(w.Uptime),
		Count: w.Count, RetryAt: w.RetryAt, Error: w.Error, Data: w.Data,
	}
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
		case out <- eventOf(scope, w):
		case <-ctx.Done():
			return
		}
	}
}
