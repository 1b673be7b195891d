package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// submission is one job submission to conductord, over HTTP or NATS, with
// its options as text.
type submission struct {
	typ         string
	payload     []byte
	key         string // idempotency key
	onBehalfOf  string // the credential submitting, if any
	wait        string // a duration; "" to answer once queued
	timeout     string
	maxAttempts string
	delay       string
	priority    string
	// queued, if set, is called once the job is queued (or refused): its
	// payload is no longer needed (an HTTP body's budget, payloads.go).
	queued func()
}

// submit checks and queues sub and, with a wait, waits for the job's end.
// It answers with an HTTP status and the JSON to send: 202 {"id"} once
// queued; with a wait 200 and the job's state when it ended, or 202 and
// its state so far; 400, 413 or 503 with {"error"}.
func (c *Conductor) submit(ctx context.Context, sub submission) (int, any) {
	bad := func(code int, format string, a ...any) (int, any) {
		return code, map[string]string{"error": fmt.Sprintf(format, a...)}
	}
	if err := subject.Token("job type", sub.typ); err != nil {
		return bad(http.StatusBadRequest, "%v", err)
	}
	if err := c.types.admit(sub.typ); err != nil {
		return bad(http.StatusBadRequest, "%v; nothing was queued", err)
	}
	var wait time.Duration
	if sub.wait != "" {
		d, err := time.ParseDuration(sub.wait)
		if err != nil || d < 0 || d > MaxWait {
			return bad(http.StatusBadRequest, "bad wait %q: want a duration such as 10s, at most %s", sub.wait, MaxWait)
		}
		wait = d
	}
	if len(sub.payload) > c.cfg.MaxPayload {
		return bad(http.StatusRequestEntityTooLarge, "payload is over the limit of %d bytes", c.cfg.MaxPayload)
	}
	if !json.Valid(sub.payload) {
		return bad(http.StatusBadRequest, "payload is not valid JSON")
	}
	var opts []client.SubmitOption
	if sub.onBehalfOf != "" {
		opts = append(opts, client.OnBehalfOf(sub.onBehalfOf))
	}
	if sub.key != "" {
		opts = append(opts, client.WithIdempotencyKey(sub.key))
	}
	if sub.timeout != "" {
		d, err := wire.ParseTimeout(sub.timeout)
		if err != nil {
			return bad(http.StatusBadRequest, "bad timeout %q: %v", sub.timeout, err)
		}
		opts = append(opts, client.WithTimeout(d))
	}
	if sub.maxAttempts != "" {
		n, err := wire.ParseMaxAttempts(sub.maxAttempts)
		if err != nil {
			return bad(http.StatusBadRequest, "bad max_attempts %q: %v", sub.maxAttempts, err)
		}
		opts = append(opts, client.WithMaxAttempts(n))
	}
	if sub.delay != "" {
		d, err := wire.ParseDelay(sub.delay)
		if err != nil {
			return bad(http.StatusBadRequest, "bad delay %q: %v", sub.delay, err)
		}
		opts = append(opts, client.WithDelay(d))
	}
	if sub.priority != "" {
		p, err := client.ParsePriority(sub.priority)
		if err != nil {
			return bad(http.StatusBadRequest, "%v", err)
		}
		opts = append(opts, client.WithPriority(p))
	}
	if wait == 0 || (sub.queued != nil && len(sub.payload) > c.inlinePayload()) {
		id, err := c.client.Submit(ctx, sub.typ, json.RawMessage(sub.payload), opts...)
		if sub.queued != nil {
			sub.payload = nil // not held while the job runs
			sub.queued()
		}
		if err != nil {
			return bad(http.StatusServiceUnavailable, "%v", err)
		}
		if wait == 0 {
			return http.StatusAccepted, map[string]string{"id": id}
		}
		// A large payload lets go of its budget before the wait, which
		// reads the state once: its job's run is no reason to hold it.
		c.submitWaits.Add(1)
		defer c.submitWaits.Add(-1)
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		j, err := c.client.Wait(wctx, id)
		return c.waited(id, j, err)
	}
	// The wait is made before the job is queued: the job's end answers it
	// with the final state it carries, and nothing is read back; the
	// ends feed wakes it as the end passes (endsfeed.go).
	c.submitWaits.Add(1)
	defer c.submitWaits.Add(-1)
	id, j, err := c.client.SubmitWait(ctx, wait, sub.typ, json.RawMessage(sub.payload), opts...)
	return c.waited(id, j, err)
}

// waited is submit's answer once a wait for job id (none if "": the job
// was not queued) ended with j and err.
func (c *Conductor) waited(id string, j *client.Job, err error) (int, any) {
	bad := func(code int, format string, a ...any) (int, any) {
		return code, map[string]string{"error": fmt.Sprintf(format, a...)}
	}
	switch {
	case id == "":
		return bad(http.StatusServiceUnavailable, "%v", err)
	case err == nil:
		return http.StatusOK, j
	case !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled):
		// The job is queued; only its end could not be awaited. (A wait
		// cut short, by the caller or by conductord stopping, answers
		// what is known: a retry must not queue the job twice.)
		return bad(http.StatusServiceUnavailable, "job %s is queued, but waiting for it failed: %v", id, err)
	case j != nil:
		return http.StatusAccepted, j
	default:
		return http.StatusAccepted, map[string]string{"id": id, "status": string(client.StatusQueued)}
	}
}

// DefaultSubmitWait is how long a NATS request submission waits for the
// job's end without a Conductor-Wait header.
const DefaultSubmitWait = 30 * time.Second

// maxSubmitWaiters bounds the NATS request submissions waiting at once;
// past it a request is answered 503 at once. MaxSubmitWaitersPerCredential
// bounds those of one credential (on its SubmitAs subjects), so that no
// submitter holds every slot.
const (
	maxSubmitWaiters              = 10_000
	MaxSubmitWaitersPerCredential = 1_000
)

// serveSubmits answers job submissions by NATS request on
// conductor.<ns>.submit.<type> and, from the holder of a credential, on
// conductor.<ns>.as.<id>.submit.<type>: the request's data is the payload,
// its headers the options (Conductor-Wait, default 30s, 0 for no wait;
// Idempotency-Key; Conductor-Timeout; Conductor-Max-Attempts); the reply
// is what POST /v1/jobs/{type}?wait= answers, with Conductor-Status.
// conductords sharing a NATS share the requests (a queue group).
func (c *Conductor) serveSubmits(ctx context.Context) error {
	slots := &submitSlots{all: make(chan struct{}, maxSubmitWaiters), by: map[string]int{}}
	for _, subj := range []string{c.space.Submits(), c.space.SubmitsAs()} {
		sub, err := c.nc.QueueSubscribe(subj, "conductord", func(m *nats.Msg) { c.serveSubmit(ctx, slots, m) })
		if err != nil {
			return fmt.Errorf("conductor: subscribe to submissions: %w", err)
		}
		c.subs = append(c.subs, sub)
	}
	return nil
}

// submitSlots counts the submissions waiting: all of them, and by
// credential.
type submitSlots struct {
	all chan struct{}
	mu  sync.Mutex
	by  map[string]int // submissions waiting by credential id; none at 0
}

// take takes a slot for credential id ("": none), or says why not.
func (s *submitSlots) take(id string) string {
	if id != "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.by[id] >= MaxSubmitWaitersPerCredential {
			return fmt.Sprintf("credential %s has %d submissions waiting, its most; retry later", id, MaxSubmitWaitersPerCredential)
		}
	}
	select {
	case s.all <- struct{}{}:
	default:
		return "too many submissions waiting; retry later"
	}
	if id != "" {
		s.by[id]++
	}
	return ""
}

func (s *submitSlots) give(id string) {
	<-s.all
	if id == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by[id]--; s.by[id] <= 0 {
		delete(s.by, id)
	}
}

// serveSubmit answers one submission by request.
func (c *Conductor) serveSubmit(ctx context.Context, slots *submitSlots, m *nats.Msg) {
	id, typ := c.space.ParseSubmitAs(m.Subject)
	if typ == "" {
		typ = c.space.SubmitTypeOf(m.Subject)
	}
	if msg := slots.take(id); msg != "" {
		c.reply(m, http.StatusServiceUnavailable, map[string]string{"error": msg})
		return
	}
	started := c.serveAsync(func() { slots.give(id) }, func() {
		if msg := c.fullError(); msg != "" {
			c.reply(m, http.StatusServiceUnavailable, map[string]string{"error": msg})
			return
		}
		wait := m.Header.Get(names.HeaderWait)
		if wait == "" {
			wait = DefaultSubmitWait.String()
		} else if wait == "0" {
			wait = ""
		}
		code, answer := c.submit(ctx, submission{
			typ: typ, payload: m.Data, key: m.Header.Get(names.HeaderIdempotencyKey), onBehalfOf: id,
			wait: wait, timeout: m.Header.Get(names.HeaderTimeout), maxAttempts: m.Header.Get(names.HeaderMaxAttempts),
			delay: m.Header.Get(names.HeaderDelay), priority: m.Header.Get(names.HeaderPriority),
		})
		c.reply(m, code, answer)
	})
	if !started {
		c.reply(m, http.StatusServiceUnavailable, map[string]string{"error": "conductord is stopping"})
	}
}

// serveAsync runs f on a goroutine of c.wg, then release, unless
// conductord has begun to stop: then it calls release and returns false.
// Under submitMu, so that no request starts once shutdown waits for wg.
func (c *Conductor) serveAsync(release, f func()) bool {
	return c.serveAsyncIn(&c.wg, release, f)
}

// serveAsyncIn is serveAsync on a goroutine of wg's: one Stop waits for
// as its owner says.
func (c *Conductor) serveAsyncIn(wg *sync.WaitGroup, release, f func()) bool {
	c.submitMu.Lock()
	defer c.submitMu.Unlock()
	if c.closing.Err() != nil {
		release()
		return false
	}
	wg.Go(func() {
		defer release()
		f()
	})
	return true
}

// reply answers a NATS request with answer and its status: on an inbox
// only, and on a credential's own for a request on its own subject, so
// that no requester can aim conductord's answer at a subject it may not
// publish to (subject.IsInbox).
func (c *Conductor) reply(m *nats.Msg, code int, answer any) {
	if !subject.IsInbox(m.Reply) {
		return
	}
	if id, _ := c.space.ParseSubmitAs(m.Subject); id != "" && !subject.IsInboxOf(m.Reply, id) {
		return
	}
	c.answer(m, code, answer)
}
