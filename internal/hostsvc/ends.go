package hostsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/wire"
)

// Ends: a host announces the final states it stored in its ends, which
// conductord archives (and serves once they leave the bucket). A host on
// a credential of its own publishes them under its name (subject.EndsAs),
// and each final state it carries must be one the store holds for that
// job: one the store wrote for it (remembered in finals), or, forgotten
// (a restart, a full memory), one that ends the job as the state in the
// bucket does (the same status, result and error: a later write may
// have recorded a superseded attempt in its history since). So no host
// archives a state the store would not have taken: of another type's
// job, or a job's end it never stored.

// finals remembers the final states the store wrote, a few each job, by a
// hash of their bytes. It forgets the older half when full.
type finals struct {
	mu       sync.Mutex
	seed     maphash.Seed
	cur, old map[string][]uint64
	max      int
}

// maxFinals bounds the jobs finals remembers; finalsEach, the states of
// each (the end, and the superseded attempts recorded over it).
const (
	maxFinals  = 1 << 17
	finalsEach = 4
)

func newFinals() *finals {
	return &finals{seed: maphash.MakeSeed(), cur: map[string][]uint64{}, max: maxFinals}
}

func (f *finals) put(id string, data []byte) {
	h := maphash.Bytes(f.seed, data)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.cur) >= f.max/2 {
		f.old, f.cur = f.cur, make(map[string][]uint64, len(f.cur))
	}
	hs := f.cur[id]
	if len(hs) >= finalsEach {
		hs = hs[1:]
	}
	f.cur[id] = append(hs, h)
}

func (f *finals) has(id string, data []byte) bool {
	h := maphash.Bytes(f.seed, data)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, hs := range [][]uint64{f.cur[id], f.old[id]} {
		for _, x := range hs {
			if x == h {
				return true
			}
		}
	}
	return false
}

// ErrNotStored is wrapped by CheckEnd's errors: the end is not one the
// store holds.
var ErrNotStored = errors.New("not a final state the store holds")

// CheckEnd checks the final state, state, that a host on a credential of
// its own announced in its ends of job type typ for job id: a state of
// that job and type, final, and one the store holds (above). An error
// wrapping ErrNotStored refuses it; another says the store could not be
// read.
func (s *Server) CheckEnd(ctx context.Context, typ, id string, state []byte) error {
	h, err := readHead(state)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrNotStored, err)
	case h.ID != id || h.Type != typ:
		return fmt.Errorf("%w: the state of job %q of type %q in an end of job %q of type %q", ErrNotStored, h.ID, h.Type, id, typ)
	case !wire.Status(h.Status).Final():
		return fmt.Errorf("%w: a %q state in the end of job %s", ErrNotStored, h.Status, id)
	case s.store.finals.has(id, state):
		return nil
	}
	e, err := s.store.states.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: job %s has no state", ErrNotStored, id)
	}
	if err != nil {
		return fmt.Errorf("read job %s's state: %w", id, err)
	}
	if !sameEnd(e.Value(), state) {
		return fmt.Errorf("%w: job %s's end is not its stored state's", ErrNotStored, id)
	}
	return nil
}

// sameEnd reports whether the job states a and b end a job alike: the
// same job and type, final, with the same status, result and error.
func sameEnd(a, b []byte) bool {
	var x, y struct {
		ID     string          `json:"id"`
		Type   string          `json:"type"`
		Status wire.Status     `json:"status"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return x.Status.Final() && x.ID == y.ID && x.Type == y.Type && x.Status == y.Status &&
		x.Error == y.Error && bytes.Equal(x.Result, y.Result)
}
