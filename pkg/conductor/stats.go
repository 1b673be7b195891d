package conductor

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// counts are the ended attempts of one job type since its counters were
// created: Succeeded and Dead count jobs, Failed counts failed attempts that
// will be retried, Superseded the late outcomes not kept (a newer attempt
// held the job, or it had ended).
type counts struct {
	Succeeded  uint64 `json:"succeeded"`
	Failed     uint64 `json:"failed"`
	Dead       uint64 `json:"dead"`
	Superseded uint64 `json:"superseded,omitempty"`
}

// countsRecord is what the stats bucket holds under a job type: its counts,
// and the stream sequences of the ends messages of the type they count
// whose acks conductord has not seen confirmed (Unacked), in the ends
// stream created at Stream. One put stores both: an ends message that
// comes back after the put (its ack lost with a killed conductord) is
// found in Unacked and not counted again.
type countsRecord struct {
	counts
	Unacked []uint64  `json:"unacked,omitempty"`
	Stream  time.Time `json:"unacked_stream,omitzero"`
}

// statsMaxUnacked bounds the unacked sequences kept, of all types: those
// the consumer may have unacked (endsMaxAckPending), those whose acks were
// confirmed less than ackSettle ago (about 1,100 a second with 100 busy
// types of one worker each: 5,500), and acks applied but never confirmed,
// which stay until the ack floor passes them (ackedTo). Past it some are
// dropped, down to statsKeepAfterBound (see bound): such an end, delivered
// again, would be counted twice.
const (
	statsMaxUnacked     = 16 * endsMaxAckPending
	statsKeepAfterBound = statsMaxUnacked - statsMaxUnacked/8
)

// statsForgetLogEvery is how often at most the sequences dropped past
// statsMaxUnacked are logged: a taker past the bound drops some every
// few hundred ends, and the log says so once a while, not each time.
const statsForgetLogEvery = time.Minute

// stats counts job ends per type, with the sequence of each ends message
// counted, and saves them to the stats bucket when the ends taker flushes
// (save), so they survive a restart, a SIGKILL included: the taker acks an
// ends message only once the counts of its type are saved. It has no
// goroutine of its own.
//
// mu guards the fields below it: the ends taker counts (countEnds) and
// saves, its acker drops the confirmed sequences (acked), the HTTP API
// reads what was saved (snapshot). Only the taker's goroutine saves, so
// the puts of one type are never reordered.
type stats struct {
	kv     jetstream.KeyValue
	log    *slog.Logger
	stream time.Time // the ends stream's creation: its sequences are those in unacked

	// fenced is set when a save finds a type's record written by another
	// conductord since this one read it: a leader that lost its lease
	// (leader.go); reload clears it.
	fenced atomic.Bool

	// readMu guards what a conductord that does not lead read of the
	// counts the leader saved (current).
	readMu sync.Mutex
	read   map[string]counts
	readAt time.Time

	mu      sync.Mutex
	revs    map[string]uint64               // the revision of each type's record as this conductord read or wrote it
	byType  map[string]counts               // counted
	saved   map[string]counts               // stored in the bucket, as snapshot shows
	unacked map[string]map[uint64]time.Time // per type, the sequences counted whose acks are not settled: when the ack was confirmed, zero until then
	kept    int                             // the sequences in unacked, of all types
	dirty   map[string]bool                 // changed since saved

	// forgotten counts the sequences bound dropped since it last logged,
	// at forgottenLogged.
	forgotten       int
	forgottenLogged time.Time
}

func newStats(ctx context.Context, js jetstream.JetStream, space subject.Space, log *slog.Logger) (*stats, error) {
	kv, err := js.KeyValue(ctx, space.StatsBucket())
	if err != nil {
		return nil, fmt.Errorf("conductor: open stats bucket: %w", err)
	}
	ends, err := js.Stream(ctx, space.EndsStream())
	if err != nil {
		return nil, fmt.Errorf("conductor: read the job ends stream: %w", err)
	}
	s := &stats{kv: kv, log: log, stream: ends.CachedInfo().Created}
	if err := s.reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// reload reads the counts saved, in place of those held: at the start, and
// when this conductord becomes the leader, after another saved them.
func (s *stats) reload(ctx context.Context) error {
	records, err := s.records(ctx)
	if err != nil {
		return fmt.Errorf("conductor: load stats: %w", err)
	}
	byType, saved := map[string]counts{}, map[string]counts{}
	unacked, revs := map[string]map[uint64]time.Time{}, map[string]uint64{}
	kept := 0
	for key, sr := range records {
		revs[key] = sr.rev
		if !sr.ok {
			continue
		}
		r := sr.record
		byType[key], saved[key] = r.counts, r.counts
		// The sequences of an ends stream made again (deleted by hand)
		// are not those of the new one.
		if len(r.Unacked) > 0 && r.Stream.Equal(s.stream) {
			unacked[key] = make(map[uint64]time.Time, len(r.Unacked))
			for _, seq := range r.Unacked {
				unacked[key][seq] = time.Time{}
			}
			kept += len(unacked[key])
		}
	}
	s.mu.Lock()
	s.byType, s.saved, s.unacked, s.revs, s.dirty = byType, saved, unacked, revs, map[string]bool{}
	s.kept = kept
	s.bound()
	s.mu.Unlock()
	s.fenced.Store(false)
	return nil
}

// countEnds counts ends, the ends message of sequence seq in the ends
// stream, and reports whether it did: not if seq is counted already (0
// is no sequence: counted, not kept).
func (s *stats) countEnds(seq uint64, ends wire.Ends) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	typ := ends.Type
	if _, ok := s.unacked[typ][seq]; ok && seq != 0 {
		return false
	}
	c := s.byType[typ]
	c.Superseded += uint64(max(ends.Superseded, 0))
	for _, e := range ends.Jobs {
		switch e.Status {
		case wire.StatusSucceeded:
			c.Succeeded++
		case wire.StatusFailed:
			c.Failed++
		case wire.StatusDead:
			c.Dead++
		}
	}
	s.byType[typ] = c
	s.dirty[typ] = true
	if seq != 0 {
		if s.unacked[typ] == nil {
			s.unacked[typ] = map[uint64]time.Time{}
		}
		s.unacked[typ][seq] = time.Time{}
		s.kept++
		s.bound()
	}
	return true
}

// bound drops unacked sequences once more than statsMaxUnacked are kept,
// down to statsKeepAfterBound, so that the sort of all of them comes once
// every statsMaxUnacked/8 ends at most, not with each. Those whose acks
// were confirmed go first, the earliest confirmed first: they come back
// only if the server is killed within ackSettle. Those not confirmed (an
// ack that failed, an end held) are certain to come back, and go last,
// the lowest first. mu is held.
func (s *stats) bound() {
	if s.kept <= statsMaxUnacked {
		return
	}
	type typSeq struct {
		typ       string
		seq       uint64
		confirmed time.Time
	}
	all := make([]typSeq, 0, s.kept)
	for typ, seqs := range s.unacked {
		for seq, at := range seqs {
			all = append(all, typSeq{typ, seq, at})
		}
	}
	slices.SortFunc(all, func(a, b typSeq) int {
		switch {
		case a.confirmed.IsZero() != b.confirmed.IsZero():
			if a.confirmed.IsZero() {
				return 1
			}
			return -1
		case !a.confirmed.Equal(b.confirmed):
			return a.confirmed.Compare(b.confirmed)
		}
		return cmp.Compare(a.seq, b.seq)
	})
	drop := all[:len(all)-statsKeepAfterBound]
	for _, d := range drop {
		delete(s.unacked[d.typ], d.seq)
		s.dirty[d.typ] = true
	}
	s.kept -= len(drop)
	s.forgotten += len(drop)
	if now := time.Now(); now.Sub(s.forgottenLogged) >= statsForgetLogEvery {
		s.log.Warn("job ends counted but not seen acked are too many; some are forgotten (those whose acks were confirmed first), and counted again if they come back",
			"forgotten", s.forgotten, "kept", s.kept, "logged_every", statsForgetLogEvery)
		s.forgotten, s.forgottenLogged = 0, now
	}
}

// acked notes that the acks of the sequences of typ were confirmed, and
// drops those confirmed more than ackSettle ago: those ends do not come
// back.
func (s *stats) acked(typ string, seqs []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, seq := range seqs {
		if t, ok := s.unacked[typ][seq]; ok && t.IsZero() {
			s.unacked[typ][seq] = now
		}
	}
	for seq, t := range s.unacked[typ] {
		if !t.IsZero() && now.Sub(t) > ackSettle {
			delete(s.unacked[typ], seq)
			s.kept--
			s.dirty[typ] = true
		}
	}
}

// ackSettle is how long the sequence of ends stays saved after the server
// confirmed their ack: it writes its consumers' state to disk on a timer,
// so an ack it confirmed may still be lost with a kill, and the ends come
// back.
const ackSettle = 5 * time.Second

// ackedTo drops the sequences up to floor, the consumer's ack floor:
// those ends were acked, or given up, and do not come back.
func (s *stats) ackedTo(floor uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for typ, seqs := range s.unacked {
		for seq := range seqs {
			if seq <= floor {
				delete(seqs, seq)
				s.kept--
				s.dirty[typ] = true
			}
		}
	}
}

// unackedLen is the number of unacked sequences kept.
func (s *stats) unackedLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kept
}

// snapshot returns the counts saved: what a restart, even after a SIGKILL,
// starts from, so that they never go back.
func (s *stats) snapshot() map[string]counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.saved)
}

// current returns the counts: those this conductord saved if it leads,
// else those the leader saved, read from the bucket at most once every
// statsReadEvery (each read is a get per type).
func (s *stats) current(ctx context.Context, leading bool) map[string]counts {
	if leading {
		return s.snapshot()
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if time.Since(s.readAt) < statsReadEvery && s.read != nil {
		return s.read
	}
	records, err := s.records(ctx)
	if err != nil {
		s.log.Warn("read the job counts the leader saved", "err", err)
		return s.read
	}
	read := make(map[string]counts, len(records))
	for key, sr := range records {
		if sr.ok {
			read[key] = sr.record.counts
		}
	}
	s.read, s.readAt = read, time.Now()
	return read
}

// storedRecord is a type's record as the stats bucket holds it: rev its
// revision, ok false if it could not be decoded.
type storedRecord struct {
	record countsRecord
	rev    uint64
	ok     bool
}

// records reads every type's record from the stats bucket; a key that
// cannot be read (gone meanwhile) is left out.
func (s *stats) records(ctx context.Context) (map[string]storedRecord, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]storedRecord{}
	for key := range keys.Keys() {
		e, err := s.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		sr := storedRecord{rev: e.Revision()}
		sr.ok = json.Unmarshal(e.Value(), &sr.record) == nil
		out[key] = sr
	}
	return out, nil
}

// statsReadEvery is how long the counts read from the bucket are kept.
const statsReadEvery = time.Second

// save puts the records of the types changed since their last save, and
// returns the types whose put failed (they stay to save): the ends
// counted of any other type before save began are stored. Only the ends
// taker's goroutine calls it.
func (s *stats) save() (failed map[string]bool) {
	s.mu.Lock()
	batch := make(map[string]countsRecord, len(s.dirty))
	for typ := range s.dirty {
		r := countsRecord{counts: s.byType[typ], Unacked: slices.Sorted(maps.Keys(s.unacked[typ]))}
		if len(r.Unacked) > 0 {
			r.Stream = s.stream
		}
		batch[typ] = r
	}
	clear(s.dirty)
	s.mu.Unlock()
	for typ, r := range batch {
		data, _ := json.Marshal(r)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.mu.Lock()
		rev := s.revs[typ]
		s.mu.Unlock()
		// At the revision read: a record another conductord wrote
		// meanwhile is not overwritten.
		var err error
		if rev == 0 {
			rev, err = s.kv.Create(ctx, typ, data)
		} else {
			rev, err = s.kv.Update(ctx, typ, data, rev)
		}
		cancel()
		if conflict(err) {
			s.fenced.Store(true)
		}
		s.mu.Lock()
		if err != nil {
			s.dirty[typ] = true
		} else {
			s.saved[typ], s.revs[typ] = r.counts, rev
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("save job counts; the job ends they count are not acked until they are saved", "type", typ, "err", err)
			if failed == nil {
				failed = map[string]bool{}
			}
			failed[typ] = true
		}
	}
	return failed
}
