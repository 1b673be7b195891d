package archive

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Store.
type Config struct {
	// Dir holds the segment files; Open creates it. Required.
	Dir string
	// MaxAge drops a sealed segment once its newest state ended longer
	// ago. Zero: no limit by age.
	MaxAge time.Duration
	// MaxBytes drops the oldest sealed segments while the files hold more.
	// Zero: no limit by size.
	MaxBytes int64
	// MaxStates drops the oldest sealed segments while more states are
	// kept. Zero: no limit by count.
	MaxStates int
	// SegmentStates seals a segment once it holds this many records.
	// Zero: 100_000. It bounds the memory of the open segment's map.
	SegmentStates int
	// SegmentAge seals a segment this long after it was opened. Zero: 1h.
	SegmentAge time.Duration
	// Sync makes Put flush its batch to the disk (fsync) before it
	// returns. False: a crash of the machine, not of the process, may
	// lose the last batches; Sync and Close flush.
	Sync bool
	// Logger receives the damage Open finds and the errors of Expire.
	// Nil: slog.Default().
	Logger *slog.Logger
}

// Entry is one finished job's state.
type Entry struct {
	ID    string
	Ended time.Time
	State []byte
}

// Stats describes what a Store keeps.
type Stats struct {
	// States counts the states kept, in each segment that holds one: a
	// job put again in a later segment counts twice until the older
	// segment is dropped.
	States   int
	Bytes    int64 // of the segment files
	Segments int   // the open one included
	Oldest   time.Time
	Damage   Damage
}

// Damage counts what Open found damaged since the store was opened.
type Damage struct {
	// TornBytes were cut from the end of data files: a record a crash
	// cut, or garbage after the last intact record.
	TornBytes int64
	// SkippedRecords counts the damaged stretches between intact records
	// (each one record, or more), of SkippedBytes in all.
	SkippedRecords int
	SkippedBytes   int64
	// IndexesRebuilt counts the indexes missing or damaged, rebuilt from
	// their data files.
	IndexesRebuilt int
	// SegmentsLost counts the data files set aside as unreadable (renamed
	// to *.bad) and the indexes without a data file (removed).
	SegmentsLost int
	// CorruptReads counts the Gets that found a record damaged since
	// Open (a sealed data file is not read whole at Open); they return
	// ErrCorrupt.
	CorruptReads int
}

// Zero reports whether nothing was found damaged.
func (d Damage) Zero() bool { return d == Damage{} }

var (
	ErrClosed        = errors.New("archive: store closed")
	ErrEmptyID       = errors.New("archive: empty job id")
	ErrIDTooLong     = fmt.Errorf("archive: job id longer than %d bytes", MaxIDLen)
	ErrStateTooLarge = fmt.Errorf("archive: state larger than %d bytes", MaxStateLen)
	// ErrLocked is returned by Open for a directory another Store uses.
	ErrLocked = errors.New("archive: directory in use")
	// ErrCorrupt is returned by Get for a record found damaged after Open.
	ErrCorrupt = errors.New("archive: corrupt record")
)

// Store is an archive of finished job states in one directory. Its
// methods are safe for concurrent use; Puts are serialised.
//
// Lock order: writeMu, then mu.
type Store struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time // time.Now; tests set it
	lock *os.File         // the directory's lock, released by Close

	// writeMu is held by Put, Sync, Expire and Close, and serialises all
	// changes to the files. Its holder owns buf and nextSeq, and is the
	// only writer of the fields under mu.
	writeMu sync.Mutex
	buf     []byte
	nextSeq uint64

	// mu guards the fields below for Get and Stats, which read them with
	// mu read-locked; writers hold writeMu and mu.
	mu      sync.RWMutex
	closed  bool
	open    *segment
	openIDs map[string]uint32 // id -> offset in open, the newest
	sealed  []*segment        // oldest first; replaced, never changed in place
	damage  Damage

	corruptReads atomic.Int64 // Damage.CorruptReads
	damaged      []string     // by Open, the segments it repaired
}

// Put appends states; of a job's states, the one put last is the one Get
// returns. Put checks every entry before it writes any. With Config.Sync
// the batch is on disk when Put returns. A batch that fills a segment is
// written in parts, the segment sealed between them: if Put then fails,
// the parts before the failure are kept.
func (s *Store) Put(states ...Entry) error {
	for _, e := range states {
		if err := checkEntry(e); err != nil {
			return err
		}
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.buf = s.buf[:0]
	first := 0 // of the states not yet written
	for i, e := range states {
		if s.mustSealBefore(i-first, len(s.buf)+recordLen(e)) {
			if err := s.writeAndSeal(states[first:i]); err != nil {
				return err
			}
			first = i
		}
		s.buf = appendRecord(s.buf, e)
		if s.open.info.records+i+1-first >= s.cfg.SegmentStates {
			if err := s.writeAndSeal(states[first : i+1]); err != nil {
				return err
			}
			first = i + 1
		}
	}
	return s.write(states[first:])
}

// mustSealBefore reports whether the open segment must be sealed before
// more records are added to the pending ones, making pendingBytes.
func (s *Store) mustSealBefore(pending, pendingBytes int) bool {
	in := s.open.info
	return in.records+pending > 0 &&
		(in.size+int64(pendingBytes) > maxDataSize || s.now().Sub(s.open.created) >= s.cfg.SegmentAge)
}

// writeAndSeal writes the pending records of states and seals the open
// segment.
func (s *Store) writeAndSeal(states []Entry) error {
	if err := s.write(states); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	return s.seal(s.now())
}

// write appends s.buf, the records of states, to the open segment and
// publishes them.
func (s *Store) write(states []Entry) error {
	if len(states) == 0 {
		return nil
	}
	seg := s.open
	if _, err := seg.data.WriteAt(s.buf, seg.info.size); err != nil {
		seg.data.Truncate(seg.info.size) // best effort: the next scan skips the rest
		return fmt.Errorf("archive: write segment %016x: %w", seg.seq, err)
	}
	if s.cfg.Sync {
		if err := seg.data.Sync(); err != nil {
			return fmt.Errorf("archive: sync segment %016x: %w", seg.seq, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	off := seg.info.size
	for _, e := range states {
		s.openIDs[e.ID] = uint32(off)
		seg.info.add(e.Ended)
		off += int64(recordLen(e))
	}
	seg.info.size = off
	seg.info.states = len(s.openIDs)
	return nil
}

// seal writes the open segment's index and opens a new segment, in this
// order: a crash between the two leaves the segment sealed.
func (s *Store) seal(now time.Time) error {
	seg := s.open
	sl, err := seg.writeIndex(s.openIDs)
	if err != nil {
		return err
	}
	next, err := createSegment(s.cfg.Dir, s.nextSeq, now)
	if err != nil {
		sl.index.Close()
		os.Remove(indexName(s.cfg.Dir, seg.seq)) // open again
		return err
	}
	s.nextSeq++
	s.mu.Lock()
	seg.sealWith(sl)
	s.sealed = append(s.sealed[:len(s.sealed):len(s.sealed)], seg)
	s.open, s.openIDs = next, make(map[string]uint32)
	s.mu.Unlock()
	return nil
}

// Get returns the state of job id put last, if the store keeps one.
func (s *Store) Get(id string) (state []byte, ok bool, err error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, false, ErrClosed
	}
	off, inOpen := s.openIDs[id]
	open, sealed := s.open, s.sealed
	if inOpen {
		open.refs.Add(1) // listed, so not closed
	}
	s.mu.RUnlock()
	state, ok, err = s.find(id, inOpen, open, int64(off), sealed)
	if errors.Is(err, ErrCorrupt) {
		s.corruptReads.Add(1)
		s.log.Error("archive: corrupt record", "job", id, "err", err)
	}
	return state, ok, err
}

// find looks for id in open at off if inOpen, else in sealed.
func (s *Store) find(id string, inOpen bool, open *segment, off int64, sealed []*segment) ([]byte, bool, error) {
	if inOpen {
		defer open.release()
		return open.readState(off, id)
	}
	h := hashID(id)
	for i := len(sealed) - 1; i >= 0; i-- {
		seg := sealed[i]
		if !seg.bloom.has(h) || !seg.tryAcquire() {
			continue // not there, or dropped since
		}
		state, ok, err := seg.find(id, h)
		seg.release()
		if ok || err != nil {
			return state, ok, err
		}
	}
	return nil, false, nil
}

// Sync flushes the open segment to the disk.
func (s *Store) Sync() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return s.open.data.Sync()
}

// Stats returns what the store keeps.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := Stats{Damage: s.damage}
	st.Damage.CorruptReads = int(s.corruptReads.Load())
	if s.closed {
		return st
	}
	for _, seg := range append(s.sealed[:len(s.sealed):len(s.sealed)], s.open) {
		st.States += seg.info.states
		st.Bytes += seg.info.bytes()
		st.Segments++
		if seg.info.records > 0 && (st.Oldest.IsZero() || seg.info.minEnded.Before(st.Oldest)) {
			st.Oldest = seg.info.minEnded
		}
	}
	return st
}

// Close flushes the open segment and closes the store; Gets in flight
// finish. Close is idempotent.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return nil
	}
	s.mu.Lock()
	s.closed = true
	open, sealed := s.open, s.sealed
	s.open, s.sealed, s.openIDs = nil, nil, nil
	s.mu.Unlock()
	err := open.data.Sync()
	for _, seg := range append(sealed, open) {
		seg.release()
	}
	if s.lock != nil {
		s.lock.Close()
	}
	return err
}

// syncDir flushes the directory's entries.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// withDefaults returns cfg with its zero values replaced.
func (cfg Config) withDefaults() Config {
	cfg.SegmentStates = cmp.Or(cfg.SegmentStates, 100_000)
	cfg.SegmentAge = cmp.Or(cfg.SegmentAge, time.Hour)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

var _ io.Closer = (*Store)(nil)
