// Lookups: a handler reads and writes the conductor's named lookups
// through workerd (the protocol's lookup op, answered by a reply op of
// the same req). The handler's goroutine writes the request at once and
// waits; the reader hands it the reply (reader.go, replyLocked).

package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/conductor-run/conductor/internal/proto"
)

// ErrNoKey is matched by the error of Lookup and DeleteLookup for a key
// the lookup does not hold.
var ErrNoKey = errors.New("worker: no such key in the lookup")

// errNoWorkerd is the error of a lookup on a Job that Run did not hand
// out: there is no workerd to ask.
var errNoWorkerd = errors.New("worker: no workerd to ask: the job was not handed out by Run")

// LookupError is workerd's answer to a lookup that failed: Code classes
// it as HTTP does (400 a name, key or value refused, with the reason; 404
// no such key; 413 too large; 429 too many requests; 501 a workerd that
// serves no lookups; 503 the store cannot answer now, worth a retry).
type LookupError struct {
	Do, Name, Key string
	Code          int
	Msg           string
}

func (e *LookupError) Error() string {
	what := e.Name
	if e.Key != "" {
		what += "/" + e.Key
	}
	return fmt.Sprintf("worker: lookup %s %s: %s (%d)", e.Do, what, e.Msg, e.Code)
}

// Is makes a 404 match ErrNoKey.
func (e *LookupError) Is(target error) bool { return target == ErrNoKey && e.Code == 404 }

// Lookup reads key of lookup name into v, as json.Unmarshal does. A key
// the lookup does not hold returns an error matching ErrNoKey. workerd
// answers a read it has cached without asking the conductor.
func (j *Job) Lookup(ctx context.Context, name, key string, v any) error {
	r, err := j.lookup(ctx, proto.Message{Do: proto.LookupGet, Name: name, Key: key})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(r.Value, v); err != nil {
		return fmt.Errorf("worker: lookup %s/%s: decode: %w", name, key, err)
	}
	return nil
}

// SetLookup sets key of lookup name to v, encoded with json.Marshal; a
// lookup that does not exist is made. It returns once the conductor has
// stored the value: every later Lookup of the key, on any host, reads it
// or a later one.
func (j *Job) SetLookup(ctx context.Context, name, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("worker: set lookup %s/%s: encode: %w", name, key, err)
	}
	_, err = j.lookup(ctx, proto.Message{Do: proto.LookupSet, Name: name, Key: key, Value: b})
	return err
}

// DeleteLookup deletes key of lookup name. Deleting a key the lookup does
// not hold is no error.
func (j *Job) DeleteLookup(ctx context.Context, name, key string) error {
	_, err := j.lookup(ctx, proto.Message{Do: proto.LookupDel, Name: name, Key: key})
	return err
}

// LookupKeys returns the keys of lookup name, sorted; none for a lookup
// that does not exist.
func (j *Job) LookupKeys(ctx context.Context, name string) ([]string, error) {
	r, err := j.lookup(ctx, proto.Message{Do: proto.LookupKeys, Name: name})
	return r.Keys, err
}

func (j *Job) lookup(ctx context.Context, m proto.Message) (proto.Message, error) {
	if j.srv == nil {
		return proto.Message{}, errNoWorkerd
	}
	m.Op = proto.OpLookup
	r, err := j.srv.ask(ctx, m)
	if err != nil {
		return r, fmt.Errorf("worker: lookup %s %s: %w", m.Do, m.Name, err)
	}
	if r.Error != "" {
		return r, &LookupError{Do: m.Do, Name: m.Name, Key: m.Key, Code: r.Code, Msg: r.Error}
	}
	return r, nil
}

// ask writes request m, numbered, and waits for its reply, for ctx, or
// for the end of the run.
func (s *server) ask(ctx context.Context, m proto.Message) (proto.Message, error) {
	ch := make(chan proto.Message, 1)
	s.mu.Lock()
	if s.askErr != nil {
		err := s.askErr
		s.mu.Unlock()
		return proto.Message{}, err
	}
	s.lastReq++
	m.Req = s.lastReq
	s.asks[m.Req] = ch
	gone := s.gone
	s.answerLocked(m)
	s.mu.Unlock()
	s.flush()
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.asks, m.Req) // its reply, if it comes, is dropped
		s.mu.Unlock()
		return proto.Message{}, context.Cause(ctx)
	case <-gone:
		s.mu.Lock()
		defer s.mu.Unlock()
		return proto.Message{}, s.askErr
	}
}

// endAsksLocked fails the requests waiting, and every later one, with
// err: the channel from workerd has ended, and no reply will come.
func (s *server) endAsksLocked(err error) {
	if s.askErr != nil {
		return
	}
	s.askErr = err
	close(s.gone)
	clear(s.asks)
}

// replyLocked hands reply m to the request it answers, if it still
// waits.
func (s *server) replyLocked(m proto.Message) {
	ch, ok := s.asks[m.Req]
	if !ok {
		return // given up on (its context ended)
	}
	delete(s.asks, m.Req)
	ch <- m
}
