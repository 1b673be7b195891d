package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/subject"
)

// Config configures a Client. The zero value of each field is replaced by
// the default its comment names.
type Config struct {
	// Namespace of the conductor to talk to. Default "default".
	Namespace string
	// MaxPayload bounds a job's payload, in bytes; it should match the
	// conductor's. Default DefaultMaxPayload.
	MaxPayload int
	// InlinePayload is the largest payload that travels in its job's
	// message; a larger one is stored in the namespace's payload bucket
	// and passed by reference (docs/protocol.md, "Large payloads").
	// Default DefaultInlinePayload, within the NATS server's max_payload.
	// A Submitter sends every payload to conductord, which decides.
	InlinePayload int
	// RecheckInterval is how often Wait reads a job's state in case its end
	// was missed. Default 2s. A Client of its own learns of ends from the
	// job events; conductord's (Conductor.Client) from the ends workerd
	// announces a burst at a time (docs/protocol.md; see FeedEnds).
	RecheckInterval time.Duration
	// CommandTimeout is how long Command waits for each host's answer.
	// Default 5s.
	CommandTimeout time.Duration
	// HostWait is how long the Client listens to heartbeats before it
	// trusts its list of live hosts: the first Command waits for it. It
	// should exceed workerd's heartbeat interval (1s). Default 1.5s.
	HostWait time.Duration

	// FeedEnds is for a program that follows every job's end itself, as
	// conductord does from the ends workerd announces a burst at a time:
	// the Client then takes no job events (one message per job) for its
	// waits, and the program calls JobEnded for each job that ended. Its
	// waits learn of nothing else but by RecheckInterval. Default false:
	// the first Wait subscribes to the job events.
	FeedEnds bool
	// MaxHosts bounds the hosts the Client's registry holds (Hosts,
	// HeardHosts, the hosts a Command goes to): the heartbeat of a new host
	// past it is dropped and counted (DroppedHeartbeats) until a host goes
	// silent. Default DefaultMaxHosts (10,000).
	MaxHosts int
	// MaxHeartbeat bounds a heartbeat, in bytes; MaxHostPools and
	// MaxHostWorkers the pools and workers it lists. A heartbeat over any
	// is dropped and counted. Defaults DefaultMaxHeartbeat (1 MiB),
	// DefaultMaxHostPools (1,000), DefaultMaxHostWorkers (10,000).
	MaxHeartbeat   int
	MaxHostPools   int
	MaxHostWorkers int
	// MaxHostsBytes bounds the heartbeats the registry holds, all hosts
	// together, in bytes as received: a heartbeat that would take it past
	// is dropped and counted as Full. Default DefaultMaxHostsBytes (256 MiB).
	MaxHostsBytes int
	// MaxHostInterval bounds the heartbeat interval a host claims: a host
	// silent for three intervals is dropped, and one claiming more than
	// this is taken at this. Default DefaultMaxHostInterval (1m).
	MaxHostInterval time.Duration
	// Logger receives what the Client reports on its own: the heartbeats
	// it drops, at most once a minute. Default nil: none (the counts are
	// still kept, see DroppedHeartbeats).
	Logger *slog.Logger

	// Submitter is for a Client that holds a submitter's credential
	// (`conductord creds add --role submitter`, given with WithToken),
	// which has no JetStream: Submit and SubmitAndWait go through
	// conductord's submit subject of the credential, Job reads a state
	// through conductord (jobs of the credential's types only), and Wait
	// reads it every RecheckInterval rather than follow the job events.
	// Batches, cancels, dead jobs, listings, pool commands, events and
	// hosts need an operator's credential: they return ErrForbidden.
	// Default false.
	Submitter bool

	// ListenHosts has New start listening to the heartbeats, as conductord
	// does for its dashboard (HeardHosts), so that HostWait counts from
	// New. Default false: the first Hosts, Workers or Command starts.
	ListenHosts bool
}

// Client submits jobs to a conductor over NATS and waits for their results,
// sends commands to pools and follows their events. It is safe for
// concurrent use.
type Client struct {
	cfg    Config
	nc     *nats.Conn
	ownsNC bool
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	space  subject.Space
	// payloads is the payload bucket, for the payloads too large to
	// travel in their message (payloads.go); bound at the first.
	payloads *payloads.Bucket

	// mu guards sub and waiters: Wait and the event subscription touch them.
	mu      sync.Mutex
	sub     *nats.Subscription
	waiters map[string][]chan *Job
	// onWaiting, if set, is called with the job id each time a Wait has
	// read the job's state, found it not ended, and blocks until it is
	// woken or rechecks: a test signal, set before use; nil in production.
	onWaiting func(id string)
	// onStatsTaken, if set, is called each time Stats's goroutine has
	// taken a roll-up into its channel: a test signal, set before use;
	// nil in production.
	onStatsTaken func()

	// hostsMu guards hosts and hostSub, set by the first hostRegistry call.
	// It is never held with mu.
	hostsMu sync.Mutex
	hosts   *hostRegistry
	hostSub *nats.Subscription

	viaMu       sync.Mutex      // guards viaSubjects
	viaSubjects map[string]bool // the subjects a request has reached conductord on (requestVia), at most maxViaSubjects

	bucketsMu sync.Mutex                    // guards buckets
	buckets   map[string]jetstream.KeyValue // the buckets besides kv, opened on first use (see bucket)
}

// Connect dials the conductor's NATS at url and returns a Client that owns
// the connection. opts are passed to nats.Connect (nats.Token, for one).
func Connect(url string, cfg Config, opts ...nats.Option) (*Client, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("conductor-client"), nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("conductor: connect to %s: %w", url, err)
	}
	c, err := New(nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.ownsNC = true
	return c, nil
}

// DefaultMaxPayload is Config.MaxPayload's default, and conductord's;
// DefaultInlinePayload is Config.InlinePayload's.
const (
	DefaultMaxPayload    = 64 << 20
	DefaultInlinePayload = 1 << 20
)

// InlineLimit is the largest payload a job's message can carry on nc: the
// server's max_payload less room for the headers.
func InlineLimit(nc *nats.Conn) int {
	return int(nc.MaxPayload()) - messageHeadroom
}

// messageHeadroom is what a job's message or a submission by request
// leaves its headers within the server's max_payload; JobHeaderRoom is
// what the job stream's largest message (conductord's inline limit and
// this room) leaves them: a Client reads the inline limit from it.
const (
	messageHeadroom = 8 << 10
	JobHeaderRoom   = 4 << 10
)

// New returns a Client on nc. The caller keeps ownership of nc.
func New(nc *nats.Conn, cfg Config) (*Client, error) {
	cfg.Namespace = cmp.Or(cfg.Namespace, "default")
	cfg.MaxPayload = cmp.Or(cfg.MaxPayload, DefaultMaxPayload)
	cfg.InlinePayload = min(cmp.Or(cfg.InlinePayload, DefaultInlinePayload), InlineLimit(nc))
	if cfg.MaxPayload < 0 || cfg.InlinePayload < 1 {
		return nil, fmt.Errorf("conductor: bad payload limits %d, %d inline: want 1 or more (the NATS server takes messages of %d bytes)", cfg.MaxPayload, cfg.InlinePayload, nc.MaxPayload())
	}
	cfg.RecheckInterval = cmp.Or(cfg.RecheckInterval, 2*time.Second)
	cfg.CommandTimeout = cmp.Or(cfg.CommandTimeout, 5*time.Second)
	cfg.HostWait = cmp.Or(cfg.HostWait, 1500*time.Millisecond)
	cfg.MaxHosts = cmp.Or(cfg.MaxHosts, DefaultMaxHosts)
	cfg.MaxHeartbeat = cmp.Or(cfg.MaxHeartbeat, DefaultMaxHeartbeat)
	cfg.MaxHostPools = cmp.Or(cfg.MaxHostPools, DefaultMaxHostPools)
	cfg.MaxHostWorkers = cmp.Or(cfg.MaxHostWorkers, DefaultMaxHostWorkers)
	cfg.MaxHostInterval = cmp.Or(cfg.MaxHostInterval, DefaultMaxHostInterval)
	cfg.MaxHostsBytes = cmp.Or(cfg.MaxHostsBytes, DefaultMaxHostsBytes)
	if cfg.MaxHosts < 0 || cfg.MaxHeartbeat < 0 || cfg.MaxHostPools < 0 || cfg.MaxHostWorkers < 0 || cfg.MaxHostInterval < 0 || cfg.MaxHostsBytes < 0 {
		return nil, errors.New("conductor: MaxHosts, MaxHeartbeat, MaxHostPools, MaxHostWorkers, MaxHostsBytes and MaxHostInterval may not be negative")
	}
	space, err := subject.New(cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	if cfg.Submitter {
		// No JetStream: it submits and reads through conductord.
		return &Client{cfg: cfg, nc: nc, js: js, space: space, payloads: payloads.NewBucket(js, space.PayloadBucket()), waiters: make(map[string][]chan *Job)}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := mayRead(ctx, nc, subject.JSAPI("STREAM.INFO", subject.KVStream(space.StateBucket()))); err != nil {
		return nil, fmt.Errorf("conductor: open job states of namespace %q: %w", cfg.Namespace, err)
	}
	kv, err := js.KeyValue(ctx, space.StateBucket())
	if err != nil {
		return nil, fmt.Errorf("conductor: open job states of namespace %q (is conductord running?): %w", cfg.Namespace, err)
	}
	if s, err := js.Stream(ctx, space.JobStream()); err == nil {
		// A payload the job stream would refuse goes by reference: the
		// stream's limit is conductord's inline limit and room for the
		// headers.
		if lim := int(s.CachedInfo().Config.MaxMsgSize) - JobHeaderRoom; lim > 0 {
			cfg.InlinePayload = min(cfg.InlinePayload, lim)
		}
	}
	c := &Client{cfg: cfg, nc: nc, js: js, kv: kv, space: space, payloads: payloads.NewBucket(js, space.PayloadBucket()), waiters: make(map[string][]chan *Job)}
	if cfg.ListenHosts {
		if _, err := c.hostRegistry(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Conn is the Client's NATS connection: the one Connect made, or the one
// given to New.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Config is the Client's configuration, with the defaults filled in.
func (c *Client) Config() Config { return c.cfg }

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

// hostRegistry returns the Client's registry of live hosts, subscribing to
// the heartbeats on the first call. The subscription lasts until Close.
func (c *Client) hostRegistry() (*hostRegistry, error) {
	c.hostsMu.Lock()
	defer c.hostsMu.Unlock()
	if c.hosts != nil {
		return c.hosts, nil
	}
	r := newHostRegistry(c.cfg, c.space)
	sub, err := c.nc.Subscribe(c.space.Hosts(), r.receive)
	if err != nil {
		return nil, fmt.Errorf("conductor: subscribe to heartbeats: %w", err)
	}
	c.hosts, c.hostSub = r, sub
	return r, nil
}

// WithToken is the nats.Option that presents token to the conductor's
// NATS: a credential's token (`conductord creds add`) or a shared one.
// With a credential's, the connection's reply subjects are the
// credential's own ("_INBOX.c-<id>."), the only ones the server lets it
// receive on; give it to Connect, or to nats.Connect before New.
func WithToken(token string) nats.Option {
	return func(o *nats.Options) error {
		o.Token = token
		if p := auth.InboxPrefix(token); p != "" {
			o.InboxPrefix = p
		}
		return nil
	}
}
