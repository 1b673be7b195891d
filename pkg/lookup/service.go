package lookup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"golang.org/x/time/rate"

	"github.com/conductor-run/conductor/internal/ratemap"
	"github.com/conductor-run/conductor/internal/subject"
)

// The service: a Store served by request/reply, as a NATS micro service
// (discoverable with `nats micro ls`, its endpoints' stats with `nats
// micro stats conductor-lookups`), on four subjects under a prefix
// (conductor's: conductor.<namespace>.lookup):
//
//	<prefix>.get   {"name":"…","key":"…"}                -> {"value":…,"rev":N}
//	<prefix>.set   {"name":"…","key":"…","value":…}      -> {"rev":N}
//	<prefix>.del   {"name":"…","key":"…"}                -> {}
//	<prefix>.keys  {"name":"…"}                          -> {"keys":["…",…]}
//
// An error answers with the micro service's error headers: code 400 (a
// request, name, key or value refused: the description says why), 404
// (no such key), 413 (a lookup with too many keys to list), 503 (the
// store could not be read or written).

// ServiceName is the micro service's name.
const ServiceName = "conductor-lookups"

// request is a service request's body.
type request struct {
	Name  string          `json:"name"`
	Key   string          `json:"key,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
}

// answer is a service answer's body.
type answer struct {
	Value json.RawMessage `json:"value,omitempty"`
	Rev   uint64          `json:"rev,omitempty"`
	Keys  []string        `json:"keys,omitempty"`
}

// opWait bounds a request's work on the store.
const opWait = 5 * time.Second

// Serve serves store on nc under prefix until the returned service is
// stopped. An answer goes to an inbox only (a reply subject that is not
// one is not answered): no caller aims the service's answer at a subject
// of its choosing.
func Serve(nc *nats.Conn, store *Store, prefix string, opts ...ServeOption) (micro.Service, error) {
	var cfg serveConfig
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        ServiceName,
		Version:     "1.0.0",
		Description: "conductor's named lookups",
		QueueGroup:  ServiceName,
	})
	if err != nil {
		return nil, fmt.Errorf("lookup: serve: %w", err)
	}
	var src backend = store
	if cfg.cache != nil {
		src = cfg.cache
	}
	ops := map[string]func(context.Context, request) (answer, error){
		"get": func(ctx context.Context, r request) (answer, error) {
			v, rev, err := src.Get(ctx, r.Name, r.Key)
			return answer{Value: v, Rev: rev}, err
		},
		"set": func(ctx context.Context, r request) (answer, error) {
			rev, err := src.Set(ctx, r.Name, r.Key, r.Value)
			return answer{Rev: rev}, err
		},
		"del": func(ctx context.Context, r request) (answer, error) {
			return answer{}, src.Delete(ctx, r.Name, r.Key)
		},
		"keys": func(ctx context.Context, r request) (answer, error) {
			keys, err := store.Keys(ctx, r.Name)
			if keys == nil {
				keys = []string{}
			}
			return answer{Keys: keys}, err
		},
	}
	for op, f := range ops {
		h := micro.HandlerFunc(func(req micro.Request) { handle(req, f) })
		if err := svc.AddEndpoint(op, h, micro.WithEndpointSubject(prefix+"."+op),
			micro.WithEndpointPendingLimits(maxPending, maxPendingBytes)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("lookup: serve %s: %w", op, err)
		}
		if cfg.callers == "" {
			continue
		}
		// The same, on the subjects that name their caller: each caller
		// within its rate.
		h = micro.HandlerFunc(func(req micro.Request) {
			if !cfg.limits.Allow(callerOf(req.Subject(), cfg.callerToken)) {
				if subject.IsInbox(req.Reply()) {
					_ = req.Error("429", ErrBusy.Error()+" from this caller; retry later", nil)
				}
				return
			}
			handle(req, f)
		})
		if err := svc.AddEndpoint(op+"-by-caller", h, micro.WithEndpointSubject(cfg.callers+"."+op),
			micro.WithEndpointPendingLimits(maxPending, maxPendingBytes)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("lookup: serve %s: %w", op, err)
		}
	}
	// The server has the endpoints' subscriptions once it answers: a
	// client on another connection is served from Serve's return on.
	if err := nc.Flush(); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("lookup: serve: %w", err)
	}
	return svc, nil
}

// ServeOption configures Serve.
type ServeOption func(*serveConfig)

type serveConfig struct {
	callers     string // the callers' subjects' prefix, one token "*"
	callerToken int    // the index of that token
	limits      *ratemap.PerKey
	cache       *Cache
}

// WithCache answers gets from c, a cache of the store (Store.NewCache)
// that the store's Feed keeps true, and writes through it: a get it
// holds costs no read of the bucket.
func WithCache(c *Cache) ServeOption {
	return func(cfg *serveConfig) { cfg.cache = c }
}

// WithCallers also serves the endpoints under pattern, a prefix with one
// "*" token that names the caller ("conductor.default.as.*.lookup":
// conductord maps each host's requests there, so that the subject says
// whose they are), each caller at most perSecond requests a second (a
// burst of as many); past it a request is answered 429 at once.
func WithCallers(pattern string, perSecond int) ServeOption {
	return func(c *serveConfig) {
		c.callers = pattern
		c.callerToken = slices.Index(strings.Split(pattern, "."), "*")
		c.limits = &ratemap.PerKey{Every: rate.Limit(perSecond), Burst: perSecond}
	}
}

// callerOf returns the token at index i of subj.
func callerOf(subj string, i int) string {
	tokens := strings.Split(subj, ".")
	if i < 0 || i >= len(tokens) {
		return ""
	}
	return tokens[i]
}

// maxRequest bounds a request's body: a value at its largest, escaped.
const maxRequest = 8 * DefaultMaxValue

// An endpoint holds at most maxPending requests, maxPendingBytes, waiting
// to be served; past them the server drops requests (their callers time
// out), so that a flood of requests costs conductord bounded memory.
const (
	maxPending      = 4096
	maxPendingBytes = 16 << 20
)

func handle(req micro.Request, f func(context.Context, request) (answer, error)) {
	if !subject.IsInbox(req.Reply()) {
		return
	}
	var r request
	if len(req.Data()) > maxRequest {
		_ = req.Error("400", fmt.Sprintf("request of %d bytes, more than %d", len(req.Data()), maxRequest), nil)
		return
	}
	if err := json.Unmarshal(req.Data(), &r); err != nil {
		_ = req.Error("400", "not a lookup request: "+err.Error(), nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opWait)
	defer cancel()
	a, err := f(ctx, r)
	switch {
	case err != nil:
		_ = req.Error(strconv.Itoa(Code(err)), err.Error(), nil)
	default:
		if err := req.RespondJSON(a); err != nil {
			// Past the largest message the server takes (a list of many
			// long keys): said so, rather than left unanswered.
			_ = req.Error("413", ErrTooMany.Error()+": the answer is larger than the server takes: "+err.Error(), nil)
		}
	}
}

// The errors of a Client's requests that the store did not give.
var (
	// ErrBusy is wrapped by the error of a request the service refused
	// as one too many from its caller (WithCallers): try again later.
	ErrBusy = errors.New("lookup: too many requests")
	// ErrUnavailable is wrapped by the error of a request no service
	// answered, or whose store failed: try again later.
	ErrUnavailable = errors.New("lookup: unavailable")
)

// Code classes err, an error of a Client or a Store, as HTTP does: 400
// (ErrInvalid), 404 (ErrNotFound), 413 (ErrTooMany), 429 (ErrBusy), else
// 503; 200 for nil.
func Code(err error) int {
	switch {
	case err == nil:
		return 200
	case errors.Is(err, ErrInvalid):
		return 400
	case errors.Is(err, ErrNotFound):
		return 404
	case errors.Is(err, ErrTooMany):
		return 413
	case errors.Is(err, ErrBusy):
		return 429
	}
	return 503
}

// Client asks a lookup service (Serve) over NATS.
type Client struct {
	nc     *nats.Conn
	prefix string
}

// NewClient returns a Client of the service under prefix, on nc.
func NewClient(nc *nats.Conn, prefix string) *Client { return &Client{nc: nc, prefix: prefix} }

// Get returns the value of key in lookup name and its revision; an error
// wrapping ErrNotFound if it holds none.
func (c *Client) Get(ctx context.Context, name, key string) (json.RawMessage, uint64, error) {
	a, err := c.ask(ctx, "get", request{Name: name, Key: key})
	return a.Value, a.Rev, err
}

// Set sets key in lookup name to value and returns the new revision.
func (c *Client) Set(ctx context.Context, name, key string, value json.RawMessage) (uint64, error) {
	a, err := c.ask(ctx, "set", request{Name: name, Key: key, Value: value})
	return a.Rev, err
}

// Delete removes key from lookup name.
func (c *Client) Delete(ctx context.Context, name, key string) error {
	_, err := c.ask(ctx, "del", request{Name: name, Key: key})
	return err
}

// Keys returns the keys lookup name holds.
func (c *Client) Keys(ctx context.Context, name string) ([]string, error) {
	a, err := c.ask(ctx, "keys", request{Name: name})
	return a.Keys, err
}

func (c *Client) ask(ctx context.Context, op string, r request) (answer, error) {
	// Checked here too: a bad request costs no round trip.
	if err := checkName(r.Name); err != nil {
		return answer{}, err
	}
	if op != "keys" {
		if err := checkKey(r.Key); err != nil {
			return answer{}, err
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return answer{}, fmt.Errorf("%w value: %v", ErrInvalid, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*opWait)
		defer cancel()
	}
	m, err := c.nc.RequestWithContext(ctx, c.prefix+"."+op, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return answer{}, fmt.Errorf("%w: no lookup service answers on %s: %w", ErrUnavailable, c.prefix, err)
	}
	if err != nil {
		return answer{}, fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	}
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		desc := m.Header.Get(micro.ErrorHeader)
		// The store's error, as the store gave it.
		for c, sentinel := range map[string]error{"400": ErrInvalid, "404": ErrNotFound, "413": ErrTooMany} {
			if code == c {
				return answer{}, fmt.Errorf("%w%s", sentinel, strings.TrimPrefix(desc, sentinel.Error()))
			}
		}
		if code == "429" {
			return answer{}, fmt.Errorf("%w%s", ErrBusy, strings.TrimPrefix(desc, ErrBusy.Error()))
		}
		return answer{}, fmt.Errorf("%w: %s: the service answered %s: %s", ErrUnavailable, op, code, desc)
	}
	var a answer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return answer{}, fmt.Errorf("lookup: %s: an answer that is not one: %w", op, err)
	}
	return a, nil
}
