package hostsvc

import (
	"hash/maphash"
	"sync"

	"github.com/conductor-run/conductor/internal/wire"
)

// Ends: a host announces the final states it stored in its ends, which
// conductord counts, and archived before, to serve them once they leave
// the bucket. A host on a credential of its own publishes them under its
// name (subject.EndsAs), and no state in them is taken on its word: the
// store archives each final state as it writes it (Config.Archive), and
// remembers it (finals), so that an end carrying it is known for the
// host's, and one that does not is counted but not believed (Ended). No
// read of the store is made for an end: a host's ends cost conductord
// what they weigh.

// FinalState is a final state the store wrote, for Config.Archive.
type FinalState struct {
	ID    string
	State []byte

	typ    string
	status wire.Status
}

// finals remembers the final states the store wrote, a few each job, by a
// hash of their bytes, and whether each was archived. It forgets the
// older half when full.
type finals struct {
	mu       sync.Mutex
	seed     maphash.Seed
	cur, old map[string][]final
	max      int
}

type final struct {
	hash     uint64
	archived bool
	typ      string
	dead     bool
}

// maxFinals bounds the jobs finals remembers; finalsEach, the states of
// each (the end, and the superseded attempts recorded over it).
const (
	maxFinals  = 1 << 17
	finalsEach = 4
)

func newFinals() *finals {
	return &finals{seed: maphash.MakeSeed(), cur: map[string][]final{}, max: maxFinals}
}

func (f *finals) put(id, typ string, status wire.Status, data []byte, archived bool) {
	h := maphash.Bytes(f.seed, data)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.cur) >= f.max/2 {
		f.old, f.cur = f.cur, make(map[string][]final, len(f.cur))
	}
	fs := f.cur[id]
	if len(fs) >= finalsEach {
		fs = fs[1:]
	}
	f.cur[id] = append(fs, final{hash: h, archived: archived, typ: typ, dead: status == wire.StatusDead})
}

// deadOf reports whether the last final state the store wrote for job id
// is a dead one of type typ.
func (f *finals) deadOf(id, typ string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs := f.cur[id]
	if len(fs) == 0 {
		fs = f.old[id]
	}
	return len(fs) > 0 && fs[len(fs)-1].dead && fs[len(fs)-1].typ == typ
}

// get returns what finals knows of data, a state of job id.
func (f *finals) get(id string, data []byte) (final, bool) {
	h := maphash.Bytes(f.seed, data)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fs := range [][]final{f.cur[id], f.old[id]} {
		for _, x := range fs {
			if x.hash == h {
				return x, true
			}
		}
	}
	return final{}, false
}

// Ended tells what to make of the final state, state, that a host on a
// credential of its own announced in its ends of job type typ for job
// id: ok if it is one the store wrote for that job (then the end is the
// host's), and whether the store archived it then. A state the store does
// not know (forged, or written before conductord last started and
// archived then) is not to be archived, nor its batch believed.
func (s *Server) Ended(typ, id string, state []byte) (archived, ok bool) {
	h, err := readHead(state)
	if err != nil || h.ID != id || h.Type != typ || !wire.Status(h.Status).Final() {
		return false, false
	}
	f, ok := s.store.finals.get(id, state)
	return f.archived, ok
}
