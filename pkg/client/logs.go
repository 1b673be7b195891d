package client

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/logtail"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// LogLine is one line a worker wrote to its stdout or stderr, as its host
// let it out (within the host's rate of lines per pool), kept and
// published it. The JSON is that of GET /v1/pools/{name}/logs.
//
// A LogLine with Error set stands for a host whose tail is missing (it did
// not answer in time, or could not) or cut (its oldest lines left out to
// bound its answer): only Host, Pool and Error are set.
type LogLine struct {
	// Time is when workerd read the line, in UTC.
	Time time.Time `json:"time"`
	// Host and Pool say where; Index is the worker's slot and PID its
	// process.
	Host  string `json:"host"`
	Pool  string `json:"pool"`
	Index int    `json:"index"`
	PID   int    `json:"pid"`
	// Stream is "stdout" or "stderr".
	Stream string `json:"stream"`
	// Line is the line, without its newline; one over 64 KiB is cut there
	// and ends " [truncated]".
	Line string `json:"line"`
	// Dropped counts the lines of the pool the host dropped before this
	// one, over its rate.
	Dropped int `json:"dropped,omitempty"`
	// Error says why a host's tail is missing or cut.
	Error string `json:"error,omitempty"`
}

// Bounds of Logs.
const (
	// DefaultLogTail is the lines asked of each host when
	// LogsOptions.Tail is zero.
	DefaultLogTail = 100
	// MaxLogTail is the most lines asked of each host: what a host keeps
	// of a pool (and at most 256 KiB of them).
	MaxLogTail = 1000
)

// LogsOptions says what Logs reads.
type LogsOptions struct {
	// Host reads the lines of this host only; all of the pool's live
	// hosts if empty.
	Host string
	// Tail is how many of the last lines each host kept are given first:
	// zero for DefaultLogTail, negative for none, at most MaxLogTail.
	Tail int
	// Follow gives, after the tails, every new line as it is published,
	// until ctx ends; without it, the channel closes after the tails.
	Follow bool
}

// Logs reads the output of pool's workers (docs/api.md, "Logs", is the
// same over HTTP): first the last lines each live host running the pool
// kept, merged in time order, and, with opt.Follow, every new line as it
// is published. A host that did not answer within 2s is one LogLine with
// Error, and the rest goes on. With Follow the lines are subscribed to
// before the hosts are asked, and those the tails gave are dropped from
// the live ones, so that none is lost or doubled where they meet.
//
// Logs returns once the tails are in (2s at most). A goroutine owned by
// ctx feeds the channel and closes it at the end: cancel ctx to stop it.
// A reader that falls more than 4096 lines behind loses the newest ones.
//
// The error wraps ErrBadLogs for bad options, ErrPoolNotFound if no live
// host runs pool (or opt.Host does not).
func (c *Client) Logs(ctx context.Context, pool string, opt LogsOptions) (<-chan LogLine, error) {
	if err := c.forOperators("Logs"); err != nil {
		return nil, err
	}
	tail, err := opt.check(pool)
	if err != nil {
		return nil, err
	}
	hosts, err := c.commandHosts(ctx, pool, opt.Host)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var msgs <-chan *nats.Msg
	unsubscribe := func() {}
	if opt.Follow {
		if msgs, unsubscribe, err = logtail.Subscribe(ctx, c.nc, c.space, pool, opt.Host); err != nil {
			cancel()
			return nil, err
		}
	}
	tails := logtail.Ask(ctx, c.nc, c.space, hosts, pool, tail)
	out := make(chan LogLine)
	go func() {
		defer close(out)
		defer cancel()
		defer unsubscribe()
		c.feedLogs(ctx, pool, tails, msgs, out)
	}()
	return out, nil
}

// check checks opt for pool and returns the lines to ask each host for.
func (opt LogsOptions) check(pool string) (int, error) {
	if err := subject.Token("pool", pool); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadLogs, err)
	}
	if opt.Host != "" {
		if err := subject.Token("host id", opt.Host); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrBadLogs, err)
		}
	}
	switch {
	case opt.Tail > MaxLogTail:
		return 0, fmt.Errorf("%w: tail %d is over %d lines", ErrBadLogs, opt.Tail, MaxLogTail)
	case opt.Tail < 0:
		return 0, nil
	case opt.Tail == 0:
		return DefaultLogTail, nil
	}
	return opt.Tail, nil
}

// feedLogs sends the notes and lines of tails, then, if msgs is not nil,
// the live lines the tails did not give, until ctx ends.
func (c *Client) feedLogs(ctx context.Context, pool string, tails []logtail.Answer, msgs <-chan *nats.Msg, out chan<- LogLine) {
	send := func(l LogLine) bool {
		select {
		case out <- l:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for _, t := range tails {
		if t.Note != "" && !send(LogLine{Host: t.Host, Pool: pool, Error: t.Note}) {
			return
		}
	}
	for _, l := range logtail.Merge(tails) {
		if !send(logLineOf(l)) {
			return
		}
	}
	if msgs == nil {
		return
	}
	seam := logtail.NewSeam(c.space, tails)
	for {
		var m *nats.Msg
		select {
		case <-ctx.Done():
			return
		case m = <-msgs:
		}
		l, ok := logtail.Line(c.space, pool, m)
		if ok && seam.Keep(m) && !send(logLineOf(l)) {
			return
		}
	}
}

// logLineOf is the public record of l.
func logLineOf(l wire.LogLine) LogLine {
	return LogLine{
		Time: l.Time, Host: l.Host, Pool: l.Pool, Index: l.Index, PID: l.PID,
		Stream: l.Stream, Line: l.Line, Dropped: l.Dropped,
	}
}
