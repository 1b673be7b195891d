// Lookups: a handler reads and writes the conductor's named lookups
// through workerd (the protocol's lookup op, answered by a reply op of
// the same req). The handler's goroutine writes the request at once and
// waits; the reader hands it the reply (reader.go, replyLocked).
//
// The worker keeps the answers to gets that workerd marks keep (up to
// the cache size its ready op announced, WithLookupCache), and answers
// later gets of their keys from them, until a drop op names the key (or
// none: all). The reader keeps an answer and drops it in the order of
// the channel, which is the order of the truth; an answer to a get sent
// before one of the worker's own writes is not kept.

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
	if j.srv != nil {
		if value, held, ok := j.srv.kept(name, key); ok {
			if !held {
				return &LookupError{Do: proto.LookupGet, Name: name, Key: key, Code: 404, Msg: "no such key (kept)"}
			}
			if err := json.Unmarshal(value, v); err != nil {
				return fmt.Errorf("worker: lookup %s/%s: decode: %w", name, key, err)
			}
			return nil
		}
	}
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
// stored the value: every later Lookup of the key by this worker, and on
// its host, reads it or a later one; on other hosts, once the change has
// reached them, in milliseconds (docs/lookups.md, "How fresh a read
// is").
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
	s.asks[m.Req] = ask{ch: ch, get: m.Do == proto.LookupGet, write: m.Do == proto.LookupSet || m.Do == proto.LookupDel, name: m.Name, key: m.Key}
	if m.Do == proto.LookupSet || m.Do == proto.LookupDel {
		// Its own write: the copy goes now, and no answer to a get sent
		// before is kept.
		s.lastWrite = m.Req
		s.dropKeptLocked(m.Name, m.Key)
	}
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
	s.dropKeptLocked("", "") // no drop can come any more
}

// ask is a request waiting for its reply.
type ask struct {
	ch         chan proto.Message
	get, write bool
	name, key  string
}

// keptValue is a lookup answer the worker keeps: a value, or none.
type keptValue struct {
	value json.RawMessage
	held  bool
}

// replyLocked hands reply m to the request it answers, if it still
// waits, and keeps a get's answer marked keep.
func (s *server) replyLocked(m proto.Message) {
	a, ok := s.asks[m.Req]
	if !ok {
		return // given up on (its context ended)
	}
	delete(s.asks, m.Req)
	if a.write {
		// Kept meanwhile from a get overtaken by the write: not any more.
		s.dropKeptLocked(a.name, a.key)
	}
	if a.get && m.Keep && m.Req > s.lastWrite && s.cacheSize > 0 && (m.Error == "" || m.Code == 404) {
		s.keepLocked(a.name, a.key, keptValue{value: m.Value, held: m.Error == ""})
	}
	a.ch <- m
}

// kept returns the answer kept of key in lookup name, if any.
func (s *server) kept(name, key string) (value json.RawMessage, held, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.keptVals[lookupKey(name, key)]
	return v.value, v.held, ok
}

// maxKeptBytes bounds the bytes of the answers a worker keeps.
const maxKeptBytes = 8 << 20

func (s *server) keepLocked(name, key string, v keptValue) {
	k := lookupKey(name, key)
	old, had := s.keptVals[k]
	if !had && len(s.keptVals) >= s.cacheSize || s.keptBytes-len(old.value)+len(v.value) > maxKeptBytes {
		return // full: asked again next time
	}
	if s.keptVals == nil {
		s.keptVals = make(map[string]keptValue)
	}
	s.keptBytes += len(v.value) - len(old.value)
	s.keptVals[k] = v
}

// dropKeptLocked drops the answer kept of key in lookup name; every one
// if name is "".
func (s *server) dropKeptLocked(name, key string) {
	if name == "" {
		clear(s.keptVals)
		s.keptBytes = 0
		return
	}
	k := lookupKey(name, key)
	s.keptBytes -= len(s.keptVals[k].value)
	delete(s.keptVals, k)
}

func lookupKey(name, key string) string { return name + "\x00" + key }
