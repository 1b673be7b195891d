package conductor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// Job is the state of one job: see GET /v1/jobs/{id} in docs/api.md.
type Job = wire.Job

// Attempt is one run of a job.
type Attempt = wire.Attempt

// Status is where a job is in its life.
type Status = wire.Status

// The statuses of a job. Succeeded and Dead are final.
const (
	StatusQueued    = wire.StatusQueued
	StatusRunning   = wire.StatusRunning
	StatusSucceeded = wire.StatusSucceeded
	StatusFailed    = wire.StatusFailed
	StatusDead      = wire.StatusDead
	StatusCancelled = wire.StatusCancelled
)

// Priority orders the queued jobs of one type: high, normal or low.
type Priority = wire.Priority

// The priorities.
const (
	PriorityHigh   = wire.PriorityHigh
	PriorityNormal = wire.PriorityNormal
	PriorityLow    = wire.PriorityLow
)

// ParsePriority checks a priority given as text; "" is normal.
func ParsePriority(s string) (Priority, error) { return wire.ParsePriority(s) }

// Errors returned by the Client.
var (
	ErrJobNotFound = errors.New("conductor: job not found")
	ErrBadPayload  = errors.New("conductor: payload is not valid JSON")
)

// PayloadTooLargeError reports a job payload over the conductor's limit.
type PayloadTooLargeError struct {
	Size, Limit int
}

func (e *PayloadTooLargeError) Error() string {
	return fmt.Sprintf("conductor: payload of %d bytes is over the limit of %d bytes", e.Size, e.Limit)
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Namespace of the conductor to talk to. Default "default".
	Namespace string
	// MaxPayload bounds a job's payload, in bytes; it should match the
	// conductor's. Default 1 MiB.
	MaxPayload int
	// RecheckInterval is how often Wait reads a job's state in case its end
	// was missed. Default 2s. A Client of its own learns of ends from the
	// job events; conductord's (Conductor.Client) from the ends workerd
	// announces a burst at a time (docs/protocol.md).
	RecheckInterval time.Duration
	// CommandTimeout is how long Command waits for each host's answer.
	// Default 5s.
	CommandTimeout time.Duration
	// HostWait is how long the Client listens to heartbeats before it
	// trusts its list of live hosts: the first Command waits for it. It
	// should exceed workerd's heartbeat interval (1s). Default 1.5s.
	HostWait time.Duration
}

// Client submits jobs to a conductor over NATS and waits for their results,
// sends commands to pools and follows their events. It is safe for
// concurrent use.
type Client struct {
	cfg    ClientConfig
	nc     *nats.Conn
	ownsNC bool
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	space  subject.Space

	// mu guards sub and waiters: Wait and the event subscription touch them.
	mu      sync.Mutex
	sub     *nats.Subscription
	waiters map[string][]chan *Job
	// fed is set when the Client's owner tells it of job ends (see
	// jobEnded) from a subscription of its own: conductord does, from the
	// ends workerd announces a burst at a time, so that it takes no job
	// event, one message per job, for the waits of its HTTP API.
	fed bool

	// hostsMu guards hosts and hostSub, set by the first hostRegistry call.
	// It is never held with mu.
	hostsMu sync.Mutex
	hosts   *hostRegistry
	hostSub *nats.Subscription

	bucketsMu sync.Mutex                    // guards buckets
	buckets   map[string]jetstream.KeyValue // the buckets besides kv, opened on first use (see bucket)
}

// Connect dials the conductor's NATS at url and returns a Client that owns
// the connection. opts are passed to nats.Connect (nats.Token, for one).
func Connect(url string, cfg ClientConfig, opts ...nats.Option) (*Client, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("conductor-client"), nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("conductor: connect to %s: %w", url, err)
	}
	c, err := NewClient(nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.ownsNC = true
	return c, nil
}

// NewClient returns a Client on nc. The caller keeps ownership of nc.
func NewClient(nc *nats.Conn, cfg ClientConfig) (*Client, error) {
	cfg.Namespace = cmp.Or(cfg.Namespace, "default")
	cfg.MaxPayload = cmp.Or(cfg.MaxPayload, 1<<20)
	cfg.RecheckInterval = cmp.Or(cfg.RecheckInterval, 2*time.Second)
	cfg.CommandTimeout = cmp.Or(cfg.CommandTimeout, 5*time.Second)
	cfg.HostWait = cmp.Or(cfg.HostWait, 1500*time.Millisecond)
	space, err := subject.New(cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, space.StateBucket())
	if err != nil {
		return nil, fmt.Errorf("conductor: open job states of namespace %q (is conductord running?): %w", cfg.Namespace, err)
	}
	return &Client{cfg: cfg, nc: nc, js: js, kv: kv, space: space, waiters: make(map[string][]chan *Job)}, nil
}

// Close releases the Client, and its connection if Connect made it.
func (c *Client) Close() {
	c.mu.Lock()
	if c.sub != nil {
		_ = c.sub.Unsubscribe()
		c.sub = nil
	}
	c.mu.Unlock()
	c.hostsMu.Lock()
	if c.hostSub != nil {
		_ = c.hostSub.Unsubscribe()
		c.hostSub = nil
	}
	c.hostsMu.Unlock()
	if c.ownsNC {
		c.nc.Close()
	}
}

// SubmitOption tunes one Submit.
type SubmitOption func(*submitOptions)

type submitOptions struct {
	key     string
	batch   string
	timeout time.Duration
	// maxAttempts is the job's own attempt limit; 0: its pool's.
	maxAttempts int
	// id, if set, is the job's id (batches name their jobs).
	id string
	// notBefore, if set, is when the job may run.
	notBefore time.Time
	priority  Priority // "": normal
	// msgID, if set, is the publish's Nats-Msg-Id instead of the id.
	msgID string
	// requeued marks a dead job queued again (Requeue).
	requeued bool
}

// WithIdempotencyKey makes every submission of the same job type with the
// same key one job: the first creates it, later ones return its id and
// queue nothing, for as long as the job's state is retained. The first
// payload wins.
func WithIdempotencyKey(key string) SubmitOption {
	return func(o *submitOptions) { o.key = key }
}

// WithBatch adds the job to batch id.
func WithBatch(id string) SubmitOption {
	return func(o *submitOptions) { o.batch = id }
}

// WithTimeout bounds each attempt of the job to d, instead of its pool's
// job_timeout: past it the worker is told to cancel the job, then stopped,
// and the job is retried (see docs/supervision.md).
func WithTimeout(d time.Duration) SubmitOption {
	return func(o *submitOptions) { o.timeout = d }
}

// WithDelay makes the job wait d before it runs (a delayed job). It is
// queued at once; a worker takes it once d has passed.
func WithDelay(d time.Duration) SubmitOption {
	return func(o *submitOptions) { o.notBefore = time.Now().Add(d) }
}

// WithPriority queues the job at priority p: a worker of its type takes a
// high job before any normal one and a normal one before any low one.
// Jobs are normal without it.
func WithPriority(p Priority) SubmitOption {
	return func(o *submitOptions) { o.priority = p }
}

// WithMaxAttempts gives the job its own attempt limit, n >= 1, instead of
// its pool's max_attempts.
func WithMaxAttempts(n int) SubmitOption {
	return func(o *submitOptions) { o.maxAttempts = n }
}

// idempotencySpace seeds the name-based ids of idempotent submissions.
var idempotencySpace = uuid.MustParse("6f1d4c1e-2b7a-4b8e-9a51-0c3c2d6f9e10")

// Submit queues a job of type typ and returns its id once the job is
// durably queued. payload is encoded as JSON, unless it is a
// json.RawMessage or []byte, which must already be JSON.
func (c *Client) Submit(ctx context.Context, typ string, payload any, opts ...SubmitOption) (string, error) {
	var o submitOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := subject.Token("job type", typ); err != nil {
		return "", fmt.Errorf("conductor: %w", err)
	}
	data, err := encodePayload(payload)
	if err != nil {
		return "", err
	}
	if len(data) > c.cfg.MaxPayload {
		return "", &PayloadTooLargeError{Size: len(data), Limit: c.cfg.MaxPayload}
	}
	if o.timeout < 0 {
		return "", fmt.Errorf("conductor: negative timeout %s", o.timeout)
	}
	if o.maxAttempts < 0 {
		return "", fmt.Errorf("conductor: max attempts %d is not 1 or more", o.maxAttempts)
	}
	if o.priority, err = ParsePriority(string(o.priority)); err != nil {
		return "", fmt.Errorf("conductor: %w", err)
	}
	if o.priority == PriorityNormal {
		o.priority = "" // as a job's state shows it
	}

	id := cmp.Or(o.id, uuid.Must(uuid.NewV7()).String())
	if o.key != "" {
		id = uuid.NewSHA1(idempotencySpace, []byte(c.cfg.Namespace+"\x00"+typ+"\x00"+o.key)).String()
		// A job known by its state is never queued again, whenever the
		// repeat comes; within the dedup window the stream also drops a
		// second copy published by two racing submissions.
		known, err := c.known(ctx, id)
		if err != nil {
			return "", fmt.Errorf("conductor: look up job %s: %w", id, err)
		}
		if known {
			return id, nil
		}
	}
	// Queue first, then record: a failed publish leaves nothing behind, and
	// the caller's cancelling cannot cut the pair in half.
	ctx = context.WithoutCancel(ctx)
	if err := c.publish(ctx, id, typ, data, o); err != nil {
		return "", err
	}
	// Create, not Put: a worker may have stored a later state already.
	now := time.Now().UTC()
	state, _ := json.Marshal(&Job{ID: id, Type: typ, Status: StatusQueued, Batch: o.batch, Priority: o.priority, CreatedAt: now, UpdatedAt: now})
	// Should this fail, the job is still durably queued, which is what
	// Submit promises; its state then appears when a worker takes it.
	cctx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
	defer cancel()
	_, _ = c.kv.Create(cctx, id, state)
	return id, nil
}

func (c *Client) publish(ctx context.Context, id, typ string, data []byte, o submitOptions) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m := nats.NewMsg(c.space.JobAt(typ, string(o.priority)))
	m.Header.Set(wire.HeaderJobID, id)
	m.Header.Set(wire.HeaderMsgID, cmp.Or(o.msgID, id))
	if o.requeued {
		m.Header.Set(wire.HeaderRequeued, "1")
	}
	if o.batch != "" {
		m.Header.Set(wire.HeaderBatch, o.batch)
	}
	if o.timeout > 0 {
		m.Header.Set(wire.HeaderTimeout, o.timeout.String())
	}
	if o.maxAttempts > 0 {
		m.Header.Set(wire.HeaderMaxAttempts, strconv.Itoa(o.maxAttempts))
	}
	if !o.notBefore.IsZero() {
		m.Header.Set(wire.HeaderNotBefore, o.notBefore.UTC().Format(time.RFC3339Nano))
	}
	m.Data = data
	// An ack lost to a server restart would hold a single publish for the
	// whole timeout: publish again every publishAttemptTimeout instead.
	// The same Nats-Msg-Id makes the copies one job.
	err := retry(ctx, func(ctx context.Context) error {
		_, err := c.js.PublishMsg(ctx, m)
		return err
	})
	if err != nil {
		return fmt.Errorf("conductor: queue job: %w", err)
	}
	return nil
}

// known reports whether job id has a state. A lookup lost to a server
// restart is made again, every publishAttemptTimeout, until ctx ends.
func (c *Client) known(ctx context.Context, id string) (bool, error) {
	err := retry(ctx, func(ctx context.Context) error {
		_, err := c.kv.Get(ctx, id)
		return err
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, err
}

// retry calls f with a deadline of publishAttemptTimeout until it
// succeeds, fails for good (not retryable), or ctx ends: a request lost to
// a server restart would otherwise wait out the whole of ctx.
func retry(ctx context.Context, f func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
		err := f(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(publishRetryDelay):
		}
	}
}

// bucket opens the key-value bucket name once; what names it in errors.
func (c *Client) bucket(ctx context.Context, name, what string) (jetstream.KeyValue, error) {
	c.bucketsMu.Lock()
	defer c.bucketsMu.Unlock()
	if kv, ok := c.buckets[name]; ok {
		return kv, nil
	}
	kv, err := c.js.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("conductor: open the %s: %w", what, err)
	}
	if c.buckets == nil {
		c.buckets = map[string]jetstream.KeyValue{}
	}
	c.buckets[name] = kv
	return kv, nil
}

// Timing of Submit's publish: each attempt waits publishAttemptTimeout for
// its ack, and publishRetryDelay separates attempts, within 30s in all.
const (
	publishAttemptTimeout = 2 * time.Second
	publishRetryDelay     = 50 * time.Millisecond
)

// retryable reports whether a failed JetStream request (a publish, a
// lookup) may succeed if made again: no answer in time, no stream yet (a
// restarting server), or a connection being re-made.
func retryable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected)
}

func encodePayload(payload any) ([]byte, error) {
	var data []byte
	switch p := payload.(type) {
	case json.RawMessage:
		data = p
	case []byte:
		data = p
	default:
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadPayload, err)
		}
		return b, nil
	}
	if !json.Valid(data) {
		return nil, ErrBadPayload
	}
	return data, nil
}

// Job returns the state of job id, or ErrJobNotFound.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	if subject.Token("job id", id) != nil {
		return nil, ErrJobNotFound
	}
	var j Job
	if err := c.readState(ctx, id, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// readState decodes the stored state of job id into v, which may take all
// of it (a Job) or only the fields it needs (a jobHead).
func (c *Client) readState(ctx context.Context, id string, v any) error {
	e, err := c.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrJobNotFound
	}
	if err != nil {
		return fmt.Errorf("conductor: read job %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return fmt.Errorf("conductor: decode job %s: %w", id, err)
	}
	return nil
}

// Wait blocks until job id has ended (succeeded or dead) and returns its
// state, or returns ctx's error with the job's latest state.
func (c *Client) Wait(ctx context.Context, id string) (*Job, error) {
	ch, err := c.addWaiter(id)
	if err != nil {
		return nil, err
	}
	defer c.removeWaiter(id, ch)
	tick := time.NewTicker(c.cfg.RecheckInterval)
	defer tick.Stop()
	for {
		// Read after subscribing, so that an end between the two is not missed.
		j, err := c.Job(ctx, id)
		if err == nil && j.Status.Final() {
			return j, nil
		}
		if err != nil && ctx.Err() == nil {
			return nil, err
		}
		select {
		case j := <-ch:
			if j != nil {
				return j, nil
			}
			// Ended (see jobEnded): the read above finds it so.
		case <-ctx.Done():
			return j, ctx.Err()
		case <-tick.C:
		}
	}
}

// SubmitAndWait submits a job and waits for it to end.
func (c *Client) SubmitAndWait(ctx context.Context, typ string, payload any, opts ...SubmitOption) (*Job, error) {
	id, err := c.Submit(ctx, typ, payload, opts...)
	if err != nil {
		return nil, err
	}
	return c.Wait(ctx, id)
}

func (c *Client) addWaiter(id string) (chan *Job, error) {
	ch := make(chan *Job, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sub == nil && !c.fed {
		sub, err := c.nc.Subscribe(c.space.JobEvents(), c.jobEvent)
		if err != nil {
			return nil, fmt.Errorf("conductor: subscribe to job events: %w", err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		c.sub = sub
	}
	c.waiters[id] = append(c.waiters[id], ch)
	return ch, nil
}

func (c *Client) removeWaiter(id string, ch chan *Job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.waiters[id]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.waiters, id)
		return
	}
	c.waiters[id] = ws
}

// jobEvent hands a final job event to the job's waiters.
func (c *Client) jobEvent(m *nats.Msg) {
	_, status, ok := c.space.ParseJobEvent(m.Subject)
	if !ok || !Status(status).Final() {
		return
	}
	id := m.Header.Get(wire.HeaderJobID)
	c.mu.Lock()
	ws := c.waiters[id]
	delete(c.waiters, id)
	c.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	var j Job
	if err := json.Unmarshal(m.Data, &j); err != nil {
		return // the waiters' recheck reads the stored state instead
	}
	for _, w := range ws {
		w <- &j
	}
}

// jobEnded wakes the waits of job id, which has ended: each reads its
// state. conductord, which feeds its Client the ends workerd announces a
// burst at a time, calls it.
func (c *Client) jobEnded(id string) {
	c.mu.Lock()
	ws := c.waiters[id]
	delete(c.waiters, id)
	c.mu.Unlock()
	for _, w := range ws {
		w <- nil
	}
}

// hostRegistry returns the Client's registry of live hosts, subscribing to
// the heartbeats on the first call. The subscription lasts until Close.
func (c *Client) hostRegistry() (*hostRegistry, error) {
	c.hostsMu.Lock()
	defer c.hostsMu.Unlock()
	if c.hosts != nil {
		return c.hosts, nil
	}
	r := newHostRegistry(c.cfg.HostWait)
	sub, err := c.nc.Subscribe(c.space.Hosts(), r.receive)
	if err != nil {
		return nil, fmt.Errorf("conductor: subscribe to heartbeats: %w", err)
	}
	c.hosts, c.hostSub = r, sub
	return r, nil
}
