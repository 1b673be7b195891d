package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/names"
)

// A Client with Config.Submitter set holds a submitter's credential, which
// may neither write a job's state nor publish to the job stream: it
// submits through conductord, by request on the submit subject of the
// job's type (docs/protocol.md, "Submitting a job by request"), and
// conductord stores the state and queues the job.

// maxViaSubjects bounds the subjects requestVia remembers as allowed:
// one per job type the Client submits, and one for reads.
const maxViaSubjects = 1024

// maxViaWait is the longest wait one submit request asks of conductord
// (conductor.MaxWait).
const maxViaWait = 10 * time.Minute

// submitVia queues a job through conductord and, with wait > 0, waits up
// to wait for its end. It returns the job's id and, once it has ended, its
// state.
func (c *Client) submitVia(ctx context.Context, typ string, data []byte, o submitOptions, wait time.Duration) (string, *Job, error) {
	if o.id != "" || o.job.Batch != "" || o.job.Requeued || o.msgID != "" {
		return "", nil, errors.New("conductor: a submitter's client queues single jobs only: no batch, id or requeue")
	}
	if lim := InlineLimit(c.nc); len(data) > lim {
		// The request carries the payload: the NATS server's
		// max_payload bounds it. HTTP takes conductord's own limit.
		return "", nil, &PayloadTooLargeError{Size: len(data), Limit: lim, Over: "NATS max_payload"}
	}
	subj := c.space.Submit(typ)
	if id := auth.ID(c.nc.Opts.Token); id != "" {
		subj = c.space.SubmitAs(id, typ) // a credential's own subject
	}
	m := nats.NewMsg(subj)
	m.Data = data
	m.Header.Set(names.HeaderWait, wait.String())
	if o.key != "" {
		m.Header.Set(names.HeaderIdempotencyKey, o.key)
	}
	if o.job.Timeout > 0 {
		m.Header.Set(names.HeaderTimeout, o.job.Timeout.String())
	}
	if o.job.MaxAttempts > 0 {
		m.Header.Set(names.HeaderMaxAttempts, strconv.Itoa(o.job.MaxAttempts))
	}
	if d := time.Until(o.job.NotBefore); !o.job.NotBefore.IsZero() && d > 0 {
		m.Header.Set(names.HeaderDelay, d.String())
	}
	if o.priority != "" {
		m.Header.Set(names.HeaderPriority, string(o.priority))
	}
	// conductord answers within wait, and once queued: give it room past
	// wait for the queueing, which it bounds at 30s.
	rctx, cancel := context.WithTimeout(ctx, wait+time.Minute)
	defer cancel()
	reply, err := c.requestVia(rctx, m)
	if errors.Is(err, nats.ErrNoResponders) {
		return "", nil, fmt.Errorf("conductor: submit a job of type %s: no conductord answers (or the credential may not submit this type)", typ)
	}
	if err != nil {
		return "", nil, fmt.Errorf("conductor: submit a job of type %s: %w", typ, err)
	}
	status := reply.Header.Get(names.HeaderStatus)
	var j Job
	switch status {
	case "200", "202":
		if err := json.Unmarshal(reply.Data, &j); err != nil || j.ID == "" {
			return "", nil, fmt.Errorf("conductor: submit a job of type %s: bad answer %.200q", typ, reply.Data)
		}
		if status == "200" {
			return j.ID, &j, nil
		}
		return j.ID, nil, nil
	}
	if status == "413" {
		return "", nil, &PayloadTooLargeError{Size: len(data), Limit: c.cfg.MaxPayload}
	}
	return "", nil, fmt.Errorf("conductor: submit a job of type %s: refused (%s): %s", typ, status, answerError(reply))
}

// submitAndWaitVia is SubmitAndWait through conductord: one request that
// waits for the job's end, then Wait past conductord's longest wait.
func (c *Client) submitAndWaitVia(ctx context.Context, typ string, data []byte, o submitOptions) (*Job, error) {
	wait := maxViaWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, max(time.Until(dl), 0))
	}
	id, j, err := c.submitVia(ctx, typ, data, o, wait)
	if err != nil || j != nil {
		return j, err
	}
	return c.Wait(ctx, id)
}

// requestVia sends the request m to conductord and returns its answer.
// The server drops a publish the credential may not make, and only tells
// the connection, not the request, which would wait out its whole time:
// the first request on each subject is sent with a flush after it, past
// which the server's refusal, if any, is the connection's last error.
func (c *Client) requestVia(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
	c.viaMu.Lock()
	known := c.viaSubjects[m.Subject]
	c.viaMu.Unlock()
	if known {
		return c.nc.RequestMsgWithContext(ctx, m)
	}
	m.Reply = c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(m.Reply)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := c.nc.PublishMsg(m); err != nil {
		return nil, err
	}
	if err := c.nc.FlushWithContext(ctx); err != nil {
		return nil, err
	}
	if c.refused(m.Subject) {
		return nil, fmt.Errorf("%w: this credential may not publish to %s", ErrForbidden, m.Subject)
	}
	reply, err := sub.NextMsgWithContext(ctx)
	if err == nil {
		c.viaMu.Lock()
		if c.viaSubjects == nil {
			c.viaSubjects = map[string]bool{}
		}
		if len(c.viaSubjects) < maxViaSubjects {
			c.viaSubjects[m.Subject] = true
		}
		c.viaMu.Unlock()
	}
	return reply, err
}

// refused reports whether the server's last word to the connection was
// that it may not publish to subj. A publish the credential may not make
// gets no answer: only this tells it from a slow server.
func (c *Client) refused(subj string) bool {
	return refused(c.nc, subj)
}

func refused(nc *nats.Conn, subj string) bool {
	err := nc.LastError()
	return errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subj+`"`)
}

// mayRead asks the server whether the connection may publish the
// request subj (a JetStream API request that changes nothing): a request
// the credential may not make would otherwise wait out its whole time.
// Its answer is not waited for; the flush after it tells of a refusal.
func mayRead(ctx context.Context, nc *nats.Conn, subj string) error {
	if err := nc.Publish(subj, nil); err != nil {
		return err
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return err
	}
	if refused(nc, subj) {
		return fmt.Errorf("%w: this credential may not read %s", ErrForbidden, subj)
	}
	return nil
}

// jobVia reads job id's state through conductord, on the credential's own
// subject: a submitter's Client has no JetStream API.
func (c *Client) jobVia(ctx context.Context, id string) (*Job, error) {
	cred := auth.ID(c.nc.Opts.Token)
	if cred == "" {
		return nil, fmt.Errorf("%w: a submitter's Client needs a credential's token (client.WithToken)", ErrForbidden)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m := nats.NewMsg(c.space.JobAs(cred))
	m.Data = []byte(id)
	reply, err := c.requestVia(ctx, m)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("conductor: read job %s: no conductord answers", id)
	}
	if err != nil {
		return nil, fmt.Errorf("conductor: read job %s: %w", id, err)
	}
	switch reply.Header.Get(names.HeaderStatus) {
	case "200":
		var j Job
		if err := json.Unmarshal(reply.Data, &j); err != nil {
			return nil, fmt.Errorf("conductor: read job %s: bad answer: %w", id, err)
		}
		return &j, nil
	case "404":
		return nil, ErrJobNotFound
	}
	return nil, fmt.Errorf("conductor: read job %s: %s", id, answerError(reply))
}

// answerError is the error an answer of conductord's carries
// ({"error": "…"}), or its status if it carries none.
func answerError(reply *nats.Msg) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(reply.Data, &e) != nil || e.Error == "" {
		return "status " + reply.Header.Get(names.HeaderStatus)
	}
	return e.Error
}

// forOperators refuses what a submitter's Client may not do, by name,
// rather than let the server drop it unanswered.
func (c *Client) forOperators(what string) error {
	if c.cfg.Submitter {
		return fmt.Errorf("%w: %s needs an operator's credential; this Client is a submitter's (Config.Submitter)", ErrForbidden, what)
	}
	return nil
}
