package hostsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// ErrForbidden is wrapped by a Config.Admit error that refuses the
// credential (403) rather than the request (400).
var ErrForbidden = errors.New("forbidden")

// maxMaking bounds the requests for consumers being served at once;
// past it a request is answered 503.
const maxMaking = 64

// Config is a Server's.
type Config struct {
	Conn *nats.Conn          // conductord's own: it makes the consumers and publishes the feed
	JS   jetstream.JetStream // on Conn
	// StoreConn, if set, is the connection the store reads and writes on:
	// a connection of its own, so that what the hosts' requests read (job
	// messages, states) is never queued behind, nor held up, conductord's
	// other traffic, nor gets its connection cut as a slow consumer.
	// Conn if nil.
	StoreConn *nats.Conn
	Space     subject.Space
	Log       *slog.Logger
	// Admit checks that credential id (empty for a host without one) may
	// have the consumers of job type typ; an error refuses the request
	// with its message, 403 if it wraps ErrForbidden, else 400. Nil admits
	// every request.
	Admit func(id, typ string) error
	// Made, if set, is told each job type whose consumers were made.
	Made func(typ string)
	// Archived, if set, returns the archived state of job id (ok false if
	// the archive has none; an error if it cannot tell): what a host's
	// read of a job that has no state in the bucket is answered.
	Archived func(id string) (state []byte, ok bool, err error)
	// Archive, if set, keeps the final states the store writes for the
	// hosts, as it writes them (conductord's archive); an error leaves
	// them to be archived from the hosts' ends.
	Archive func([]FinalState) error
	// Go runs a request's work off the subscription's goroutine and
	// reports whether it did (false: the server is stopping, and the
	// request is refused). Nil runs it on a goroutine of the Server's,
	// which Stop waits for.
	Go func(f func()) bool
	// Elected, if set, has the Server answer the requests for cancels and
	// publish the cancel feed only while Lead says so: several conductords
	// on one namespace each follow the cancel bucket, numbered their own
	// way, and one must feed the hosts. Unset: it always does.
	Elected bool
}

// Server answers the hosts' requests and publishes the cancel feed. Make
// it with NewServer; Start subscribes and starts the feed, Stop ends both.
type Server struct {
	cfg    Config
	feed   *feed
	making slots   // the requests for consumers being served
	store  *storer // the states and dead entries hosts write through conductord
	pages  rates   // each credential's requests for pages of cancels
	asks   rates   // each credential's requests for consumers
	// readReqs are each credential's reads of states; payloadReqs its
	// reads of payload chunks.
	readReqs, payloadReqs rates
	// payloads is the payload bucket, its stream bound at the first read
	// of a payload.
	payloads *payloads.Bucket
	// refusals spaces the log lines of refused writes, per credential.
	refusals rates
	subs     []*nats.Subscription
	// cancelSubs are the subscriptions to the requests for cancels,
	// while the Server leads (Lead); mu guards them.
	cancelSubs []*nats.Subscription
	queue      *fairQueue     // the store's requests waiting, by credential
	workers    sync.WaitGroup // the store's workers
	wg         sync.WaitGroup // the requests' goroutines, if Config.Go is nil, and the store's and reads' requests being served

	mu       sync.Mutex
	stopping bool // Stop began: no request's work starts
}

// NewServer returns a Server ready to Start.
func NewServer(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		feed: newFeed(cfg.Conn, cfg.JS, cfg.Space, cfg.Log), payloads: payloads.NewBucket(cfg.JS, cfg.Space.PayloadBucket()), making: slots{all: maxMaking, each: maxMaking / 8},
		pages: rates{Every: pageRate, Burst: pageBurst}, asks: rates{Every: consumerRate, Burst: consumerBurst},
		refusals: rates{Every: 1, Burst: 5}, readReqs: rates{Every: readReqRate, Burst: readReqRate},
		payloadReqs: rates{Every: payloadReqRate, Burst: payloadReqRate},
		queue:       newFairQueue(),
	}
	if cfg.Go == nil {
		cfg.Go = func(f func()) bool { s.wg.Go(f); return true }
	}
	s.cfg = cfg
	s.feed.publishing.Store(!cfg.Elected)
	return s
}

// Start starts the feed and subscribes to the hosts' requests; it
// returns once the server has the subscriptions.
func (s *Server) Start(ctx context.Context) error {
	sp := s.cfg.Space
	if err := s.Open(ctx); err != nil {
		return err
	}
	handlers := map[string]nats.MsgHandler{sp.ConsumersAs("*", "*"): s.consumers, sp.ConsumersOf("*"): s.consumers}
	if !s.cfg.Elected {
		handlers[sp.CancelsAs("*")], handlers[sp.CancelsOf()] = s.cancels, s.cancels
	}
	for subj, h := range handlers {
		// One conductord of the namespace answers each (there may be
		// several: docs/deployment.md, "Two conductords").
		sub, err := s.cfg.Conn.QueueSubscribe(subj, "conductord-hosts", h)
		if err != nil {
			s.Stop()
			return fmt.Errorf("hostsvc: subscribe to %s: %w", subj, err)
		}
		s.subs = append(s.subs, sub)
	}
	sub, err := s.cfg.Conn.QueueSubscribe(sp.StoreAs("*", "*"), "conductord-store", s.queueStore)
	if err == nil {
		s.subs = append(s.subs, sub)
		err = sub.SetPendingLimits(storePending, storePendingBytes)
	}
	if err != nil {
		s.Stop()
		return fmt.Errorf("hostsvc: subscribe to the store requests: %w", err)
	}
	for range storeWorkers {
		s.workers.Go(s.storeWorker)
	}
	for range readWorkers {
		for subj, h := range map[string]nats.MsgHandler{sp.ReadAs("*", "*"): s.readReq, sp.PayloadAs("*", "*"): s.payloadReq} {
			sub, err := s.cfg.Conn.QueueSubscribe(subj, "conductord-read", h)
			if err == nil {
				s.subs = append(s.subs, sub)
				err = sub.SetPendingLimits(storePending, storePendingBytes)
			}
			if err != nil {
				s.Stop()
				return fmt.Errorf("hostsvc: subscribe to the reads: %w", err)
			}
		}
	}
	if err := s.cfg.Conn.Flush(); err != nil {
		s.Stop()
		return fmt.Errorf("hostsvc: subscribe: %w", err)
	}
	return s.feed.Start(ctx)
}

// Open opens the store's buckets, for CheckEnd before Start; Start opens
// them if Open was not called.
func (s *Server) Open(ctx context.Context) error {
	if s.store != nil {
		return nil
	}
	return s.openStore(ctx)
}

// Stop ends the subscriptions and the feed, and waits for the requests
// being served on the Server's goroutines (Config.Go's wait for their
// owner).
func (s *Server) Stop() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	for _, sub := range append(s.subs, s.cancelSubs...) {
		_ = sub.Unsubscribe()
	}
	s.subs, s.cancelSubs = nil, nil
	s.queue.close()
	s.workers.Wait()
	s.wg.Wait()
	// The answers given are with the server before Stop returns.
	_ = s.cfg.Conn.FlushTimeout(time.Second)
	s.feed.Stop()
}

// Lead starts (on) or stops answering the requests for cancels and
// publishing the cancel feed, for a Server with Config.Elected: on while
// its conductord leads. A host whose pages came from another conductord
// reads them again from the start: each numbers the ids its own way
// (wire.CancelsPage.Epoch).
func (s *Server) Lead(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.feed.publishing.Store(on)
	if !on || s.stopping {
		for _, sub := range s.cancelSubs {
			_ = sub.Unsubscribe()
		}
		s.cancelSubs = nil
		return nil
	}
	if s.cancelSubs != nil {
		return nil
	}
	for _, subj := range []string{s.cfg.Space.CancelsAs("*"), s.cfg.Space.CancelsOf()} {
		sub, err := s.cfg.Conn.Subscribe(subj, s.cancels)
		if err != nil {
			return fmt.Errorf("hostsvc: subscribe to %s: %w", subj, err)
		}
		s.cancelSubs = append(s.cancelSubs, sub)
	}
	return nil
}

// enter counts a request served on a subscription's goroutine in wg,
// which Stop waits for, unless Stop has begun (false: it is not served).
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.wg.Add(1)
	return true
}

// requestType returns the job type a request's subject ends with; if it
// is not a valid type, m is answered 400 and ok is false.
func (s *Server) requestType(m *nats.Msg) (typ string, ok bool) {
	typ = m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	if err := subject.Token("job type", typ); err != nil {
		s.answer(m, http.StatusBadRequest, errorBody(err))
		return "", false
	}
	return typ, true
}

// serve runs f as Config.Go does, unless Stop has begun.
func (s *Server) serve(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.stopping && s.cfg.Go(f)
}

// caller returns the credential id a request on subj comes from ("" for
// a host without one) and whether its reply subject may be answered: an
// inbox. Only the host's account (through its import, which makes the
// reply subject a mapping of the server's, "_R_.") and an admin may
// publish on these subjects: no one may aim the answer elsewhere.
func (s *Server) caller(m *nats.Msg) (id string, ok bool) {
	id, _ = s.cfg.Space.ParseAs(m.Subject)
	return id, subject.IsInbox(m.Reply)
}

func (s *Server) consumers(m *nats.Msg) {
	id, ok := s.caller(m)
	if !ok {
		return
	}
	if !s.asks.Allow(id) {
		s.answer(m, http.StatusTooManyRequests, errorBody(errTooMany))
		return
	}
	typ, ok := s.requestType(m)
	if !ok {
		return
	}
	var req wire.ConsumersRequest
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &req); err != nil {
			s.answer(m, http.StatusBadRequest, errorBody(fmt.Errorf("the request is not a consumers request: %w", err)))
			return
		}
	}
	if s.cfg.Admit != nil {
		if err := s.cfg.Admit(id, typ); err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, ErrForbidden) {
				code = http.StatusForbidden
			}
			s.answer(m, code, errorBody(err))
			return
		}
	}
	if !s.making.take(id) {
		s.answer(m, http.StatusServiceUnavailable, errorBody(errors.New("too many requests for consumers; retry later")))
		return
	}
	started := s.serve(func() {
		defer s.making.release(id)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		makeFn := MakeConsumers
		if !req.AsTheyCome {
			makeFn = MakeAllConsumers
		}
		if err := makeFn(ctx, s.cfg.JS, s.cfg.Space, typ, req.AckWait); err != nil {
			s.cfg.Log.Warn("make a host's consumers", "credential", id, "type", typ, "err", err)
			s.answer(m, http.StatusServiceUnavailable, errorBody(err))
			return
		}
		if s.cfg.Made != nil {
			s.cfg.Made(typ)
		}
		s.answer(m, http.StatusOK, struct{}{})
	})
	if !started {
		s.making.release(id)
		s.answer(m, http.StatusServiceUnavailable, errorBody(errors.New("conductord is stopping")))
	}
}

func (s *Server) cancels(m *nats.Msg) {
	id, ok := s.caller(m)
	if !ok {
		return
	}
	if !s.pages.Allow(id) {
		s.answer(m, http.StatusTooManyRequests, errorBody(errTooMany))
		return
	}
	var req wire.CancelsRequest
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &req); err != nil {
			s.answer(m, http.StatusBadRequest, errorBody(fmt.Errorf("the request is not a cancels request: %w", err)))
			return
		}
	}
	page, ok := s.feed.pageJSON(req.After)
	if !ok {
		s.answer(m, http.StatusServiceUnavailable, errorBody(errors.New("conductord is still reading the cancelled jobs; retry")))
		return
	}
	s.answer(m, http.StatusOK, page)
}

func errorBody(err error) map[string]string { return map[string]string{"error": err.Error()} }

// answer sends body, with its status, to m's reply subject, which the
// caller has checked.
func (s *Server) answer(m *nats.Msg, code int, body any) {
	if err := s.cfg.Conn.PublishMsg(NewAnswer(m.Reply, code, body)); err != nil {
		s.cfg.Log.Warn("answer a host", "err", err)
	}
}

// NewAnswer returns the answer of one of conductord's services to a
// request whose reply subject is reply: its status code in the
// Conductor-Status header, and body, as it is if json.RawMessage, else
// encoded as JSON.
func NewAnswer(reply string, code int, body any) *nats.Msg {
	r := nats.NewMsg(reply)
	r.Header.Set(names.HeaderStatus, strconv.Itoa(code))
	if raw, ok := body.(json.RawMessage); ok {
		r.Data = raw
	} else {
		r.Data, _ = json.Marshal(body)
	}
	return r
}

// Stopped is closed once the server has stopped after a Start.
func (s *Server) Stopped() <-chan struct{} { return s.feed.Stopped() }
