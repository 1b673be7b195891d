// Package logtail is the reader's end of the tails of the workers' output
// that each host keeps (workerd's end: internal/agent, logtail.go). It asks
// hosts, all at once, for the last lines they kept of a pool, checks and
// merges their answers, and tells which live lines the answers already
// gave (Seam). conductord's GET /v1/pools/{name}/logs and pkg/client's
// Client.Logs read the logs through it.
package logtail

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

const (
	// Wait is how long the hosts asked have to answer, all at once.
	Wait = 2 * time.Second
	// budget bounds the bytes of tails one reading gathers: each host's
	// answer is bounded to its share of it, within minHostBytes and
	// wire.MaxLogTailBytes (minHostBytes each past 256 hosts).
	budget       = 4 << 20
	minHostBytes = 16 << 10
	// liveBuffer is the live lines a subscription holds for its reader.
	liveBuffer = 4096
)

// Answer is one host's tail, or why there is none.
type Answer struct {
	Host string
	// Lines are the host's lines, oldest first: of the pool asked for and
	// of that host only, no more than asked for.
	Lines []wire.LogLine
	// Note says why the host's tail is missing (it did not answer, or
	// answered an error) or cut (its oldest lines left out to keep its
	// answer within its bound); "" if it is whole.
	Note string

	ok    bool // the host answered with its lines
	epoch string
	next  uint64
}

// Ask asks every host of hosts, at once, for the last n lines of pool,
// and gives them Wait to answer; the answers come in the order of hosts.
func Ask(ctx context.Context, nc *nats.Conn, sp subject.Space, hosts []string, pool string, n int) []Answer {
	if n == 0 || len(hosts) == 0 {
		return nil
	}
	maxBytes := min(wire.MaxLogTailBytes, max(minHostBytes, budget/len(hosts)))
	data, _ := json.Marshal(wire.LogTailRequest{Pool: pool, Tail: n, MaxBytes: maxBytes}) // always encodes
	ctx, cancel := context.WithTimeout(ctx, Wait)
	defer cancel()
	out := make([]Answer, len(hosts))
	var wg sync.WaitGroup
	for i, host := range hosts {
		wg.Go(func() { out[i] = ask(ctx, nc, sp, host, pool, n, data, maxBytes) })
	}
	wg.Wait()
	return out
}

// ask asks host for its tail with the encoded request data.
func ask(ctx context.Context, nc *nats.Conn, sp subject.Space, host, pool string, n int, data []byte, maxBytes int) Answer {
	a := Answer{Host: host}
	m, err := Request(ctx, nc, sp.LogTail(host), data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		a.Note = fmt.Sprintf("host %s does not answer for its logs (a workerd older than this conductor?)", host)
		return a
	case errors.Is(err, context.DeadlineExceeded):
		a.Note = fmt.Sprintf("host %s did not answer in %s", host, Wait)
		return a
	case err != nil:
		a.Note = fmt.Sprintf("host %s did not answer: %v", host, err)
		return a
	}
	// A host encodes its answer within the bytes asked (internal/agent,
	// encodeTail): a larger one is a host that lies, and is not kept.
	if len(m.Data) > maxBytes {
		a.Note = fmt.Sprintf("host %s answered %d bytes, more than the %d asked for", host, len(m.Data), maxBytes)
		return a
	}
	var t wire.LogTail
	if err := json.Unmarshal(m.Data, &t); err != nil {
		a.Note = fmt.Sprintf("host %s answered what is no tail: %v", host, err)
		return a
	}
	if t.Error != "" {
		a.Note = fmt.Sprintf("host %s: %s", host, t.Error)
		return a
	}
	a.ok, a.epoch, a.next = true, t.Epoch, t.Next
	a.Lines = slices.DeleteFunc(t.Lines, func(l wire.LogLine) bool { return l.Host != host || l.Pool != pool })
	a.Lines = a.Lines[max(0, len(a.Lines)-n):]
	if t.Cut {
		a.Note = fmt.Sprintf("host %s left its oldest lines out: a host's answer is bounded to %d bytes", host, maxBytes)
	}
	return a
}

// Request publishes data on subj, a request to one host (a tail request;
// pkg/client's pool commands too), and returns its one answer, nats.ErrNoResponders if
// none listens, or ctx's error. The answer comes on a reply subject of its
// own (subject.ControlReply), the only kind a host may publish on, so that
// a host that learns one request's reply subject can answer no other
// request of this connection's; no more than a few answers wait for it.
func Request(ctx context.Context, nc *nats.Conn, subj string, data []byte) (*nats.Msg, error) {
	reply := subject.ControlReply(nc.NewInbox())
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(4, 4*wire.MaxLogTailBytes); err != nil {
		return nil, err
	}
	if err := nc.PublishRequest(subj, reply, data); err != nil {
		return nil, err
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, err
	}
	if len(m.Data) == 0 && m.Header.Get(names.HeaderNATSStatus) == "503" {
		return nil, nats.ErrNoResponders
	}
	return m, nil
}

// Merge returns the lines of answers in time order, each host's in its
// order.
func Merge(answers []Answer) []wire.LogLine {
	var lines []wire.LogLine
	for _, a := range answers {
		lines = append(lines, a.Lines...)
	}
	slices.SortStableFunc(lines, func(a, b wire.LogLine) int { return a.Time.Compare(b.Time) })
	return lines
}

// Subscribe subscribes to the lines of pool (on host only, if not empty;
// hosts that start later included) and returns once the subscription is
// in place at the server: before the hosts are asked for their tails, so
// that Seam may join them. The channel holds liveBuffer lines for its
// reader, who must take them as they come; past them the newest are lost.
func Subscribe(ctx context.Context, nc *nats.Conn, sp subject.Space, pool, host string) (<-chan *nats.Msg, func(), error) {
	msgs := make(chan *nats.Msg, liveBuffer)
	sub, err := nc.ChanSubscribe(sp.Logs(cmp.Or(host, "*"), pool), msgs)
	if err != nil {
		return nil, nil, fmt.Errorf("conductor: subscribe to the logs: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := nc.FlushWithContext(ctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, nil, fmt.Errorf("conductor: subscribe to the logs: %w", err)
	}
	return msgs, func() { _ = sub.Unsubscribe() }, nil
}

// Line decodes a line published for pool; ok is false for a message that
// is not a line of the host and pool its subject names.
func Line(sp subject.Space, pool string, m *nats.Msg) (l wire.LogLine, ok bool) {
	host, p := sp.ParseLogs(m.Subject)
	if p != pool || json.Unmarshal(m.Data, &l) != nil || l.Host != host || l.Pool != pool {
		return wire.LogLine{}, false
	}
	return l, true
}

// Seam tells which live lines to keep once the tails are given.
type Seam struct {
	sp    subject.Space
	marks map[string]mark // by host
}

type mark struct {
	epoch string
	next  uint64
}

// NewSeam returns the seam of answers.
func NewSeam(sp subject.Space, answers []Answer) Seam {
	s := Seam{sp: sp, marks: map[string]mark{}}
	for _, a := range answers {
		if a.ok {
			s.marks[a.Host] = mark{a.epoch, a.next}
		}
	}
	return s
}

// Keep reports whether live line m is new. A line numbered
// (names.HeaderLogSeq) in the epoch of its host's tail and below the
// tail's next was in the host's ring when the host answered, so the tail
// gave it (or left it out as older than asked for); any other line came
// after it and is kept. The subscription was in place at the server
// before the hosts were asked, so every line the ring took after its
// answer reaches it. A host that did not answer has all its live lines
// kept; a line with no number (an older workerd) too.
func (s Seam) Keep(m *nats.Msg) bool {
	host, _ := s.sp.ParseLogs(m.Subject)
	mk, ok := s.marks[host]
	if !ok {
		return true
	}
	epoch, seq, ok := wire.ParseLogSeq(m.Header.Get(names.HeaderLogSeq))
	return !ok || epoch != mk.epoch || seq >= mk.next
}
