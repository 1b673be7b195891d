package hostsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// FollowCheck is how often Follow asks for the ids past the last it
// holds, to find the ids it missed though no new one came (a feed
// message lost, conductord restarted).
const FollowCheck = 10 * time.Second

// requestWait bounds each request to conductord.
const requestWait = 5 * time.Second

// makingAtOnce bounds a host's requests for consumers in flight, under
// what conductord serves of one credential at once (maxMaking/8): a host
// starting many pools waits its turn here rather than be refused there.
const makingAtOnce = 4

// Caller is a host's end of the services.
type Caller struct {
	making chan struct{} // a slot per request for consumers in flight
	nc     *nats.Conn
	sp     subject.Space
	id     string // the host's credential id; "" if it has none of its own
}

// NewCaller returns the end of a host connected by nc in namespace sp:
// on its credential's own subjects if nc's token is a host credential's.
func NewCaller(nc *nats.Conn, sp subject.Space) *Caller {
	c := &Caller{nc: nc, sp: sp, making: make(chan struct{}, makingAtOnce)}
	if auth.IsHostToken(nc.Opts.Token) {
		c.id = auth.ID(nc.Opts.Token)
	}
	return c
}

// Consumers asks conductord for the consumers of job type typ, whose
// unacked jobs come again after ackWait.
func (c *Caller) Consumers(ctx context.Context, typ string, ackWait time.Duration) error {
	subj := c.sp.ConsumersOf(typ)
	if c.id != "" {
		subj = c.sp.ConsumersAs(c.id, typ)
	}
	data, _ := json.Marshal(wire.ConsumersRequest{AckWait: ackWait, AsTheyCome: true})
	select {
	case c.making <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.making }()
	return c.request(ctx, subj, data, nil)
}

// Page asks conductord for the cancelled ids numbered past after.
func (c *Caller) Page(ctx context.Context, after uint64) (wire.CancelsPage, error) {
	subj := c.sp.CancelsOf()
	if c.id != "" {
		subj = c.sp.CancelsAs(c.id)
	}
	data, _ := json.Marshal(wire.CancelsRequest{After: after})
	var p wire.CancelsPage
	err := c.request(ctx, subj, data, &p)
	return p, err
}

func (c *Caller) request(ctx context.Context, subj string, data []byte, answer any) error {
	ctx, cancel := context.WithTimeout(ctx, requestWait)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, subj, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("no conductord answers on %s: %w", subj, err)
	}
	if err != nil {
		return fmt.Errorf("ask conductord on %s: %w", subj, err)
	}
	if code, _ := strconv.Atoi(m.Header.Get(names.HeaderStatus)); code != http.StatusOK {
		return answerError(subj, m, code)
	}
	if answer == nil {
		return nil
	}
	if err := json.Unmarshal(m.Data, answer); err != nil {
		return fmt.Errorf("conductord's answer on %s: %w", subj, err)
	}
	return nil
}

// answerError is the error of conductord's answer m, of status code, to
// a request on subj.
func answerError(subj string, m *nats.Msg, code int) error {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(m.Data, &e)
	return fmt.Errorf("conductord refused the request on %s (%d): %s", subj, code, e.Error)
}

// Cancels records what Follow learns.
type Cancels interface {
	// Cancelled records job id, cancelled; conductord holds it for ttl (0:
	// for ever).
	Cancelled(id string, ttl time.Duration)
	// Loaded says that every id conductord held when Follow began (or
	// read them again) is recorded.
	Loaded()
}

// Follow records every cancelled id into to until ctx ends or a request
// fails (its error): those conductord holds, then each new one. It reads
// them all again after a reconnect, a gap in the feed's numbers, another
// conductord's feed, or a check (every check) that finds ids it missed.
func (c *Caller) Follow(ctx context.Context, to Cancels, check time.Duration) error {
	feed := make(chan *nats.Msg, 8192)
	sub, err := c.nc.ChanSubscribe(c.sp.CancelFeed(), feed)
	if err != nil {
		return fmt.Errorf("follow the cancelled jobs: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The subscription is the server's before the first page is asked
	// for: an id cancelled after that page comes on the feed.
	if err := c.nc.FlushTimeout(requestWait); err != nil {
		return fmt.Errorf("follow the cancelled jobs: %w", err)
	}
	reconnected := c.nc.StatusChanged(nats.CONNECTED)
	defer c.nc.RemoveStatusListener(reconnected)
	f := follower{c: c, to: to}
	if err := f.read(ctx); err != nil {
		return err
	}
	t := time.NewTicker(check)
	defer t.Stop()
	spaced := time.NewTimer(readSpacing)
	defer spaced.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			err = f.read(ctx)
		case <-t.C:
			err = f.check(ctx)
		case <-spaced.C:
			if f.due {
				err = f.read(ctx)
			}
		case m := <-feed:
			err = f.feed(ctx, m)
		}
		if err != nil {
			return err
		}
		if f.due {
			spaced.Reset(time.Until(f.readAt.Add(readSpacing)))
		}
	}
}

// follower is Follow's state: the epoch and number of the last id read.
type follower struct {
	c      *Caller
	to     Cancels
	epoch  string
	last   uint64
	ttl    time.Duration
	readAt time.Time // when the last read began
	due    bool      // a read is called for, spaced from the last
}

// read reads every id held, page by page, from the first.
func (f *follower) read(ctx context.Context) error {
	f.epoch, f.last, f.readAt, f.due = "", 0, time.Now(), false
	for {
		p, err := f.c.Page(ctx, f.last)
		if err != nil {
			return err
		}
		if f.epoch != "" && p.Epoch != f.epoch {
			// Another conductord between two pages: from the first again.
			f.epoch, f.last = "", 0
			continue
		}
		f.take(p)
		if !p.More {
			f.to.Loaded()
			return nil
		}
	}
}

func (f *follower) take(p wire.CancelsPage) {
	f.epoch, f.last, f.ttl = p.Epoch, p.Last, p.TTL
	for _, id := range p.IDs {
		f.to.Cancelled(id, p.TTL)
	}
}

// check reads the ids past the last one read: none if nothing was
// missed.
func (f *follower) check(ctx context.Context) error {
	p, err := f.c.Page(ctx, f.last)
	if err != nil {
		return err
	}
	if p.Epoch != f.epoch || p.More {
		return f.read(ctx)
	}
	f.take(p)
	return nil
}

// readSpacing is the least time between two reads that feed messages
// call for: a message that is not conductord's (an operator's consumer
// can deliver anywhere) makes no flood of reads.
const readSpacing = time.Second

// feed takes one message of the feed: the next id, recorded; one read
// already; or, after a gap or from another conductord, a read again
// (which records it), at most once a readSpacing (else it is due).
func (f *follower) feed(ctx context.Context, m *nats.Msg) error {
	id, epoch := string(m.Data), m.Header.Get(wire.HeaderCancelEpoch)
	seq, err := strconv.ParseUint(m.Header.Get(wire.HeaderCancelSeq), 10, 64)
	if err != nil || epoch == "" || subject.Token("job id", id) != nil {
		return nil // not conductord's
	}
	switch {
	case epoch == f.epoch && seq <= f.last: // read with a page already
	case epoch == f.epoch && seq == f.last+1:
		f.last = seq
		f.to.Cancelled(id, f.ttl)
	case time.Since(f.readAt) < readSpacing:
		f.due = true
	default:
		return f.read(ctx)
	}
	return nil
}
