package archive

import (
	"os"
	"time"
)

// Expire applies the retention limits at now: it seals the open segment
// if it is older than Config.SegmentAge, then drops sealed segments,
// oldest first and whole, while the oldest one's newest state ended more
// than MaxAge before now, or the store holds more than MaxBytes or
// MaxStates. The open segment is never dropped. Errors are logged: the
// next Expire tries again.
func (s *Store) Expire(now time.Time) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed {
		return
	}
	if s.open.info.records > 0 && now.Sub(s.open.created) >= s.cfg.SegmentAge {
		if err := s.seal(now); err != nil {
			s.log.Error("archive: seal segment", "segment", s.open.seq, "err", err)
		}
	}
	drop := s.expired(now)
	if drop == 0 {
		return
	}
	s.mu.Lock()
	gone := s.sealed[:drop]
	s.sealed = s.sealed[drop:len(s.sealed):len(s.sealed)]
	s.mu.Unlock()
	for _, seg := range gone {
		// Gets reading seg keep their open files; the files close with
		// the last of them.
		for _, name := range []string{indexName(seg.dir, seg.seq), dataName(seg.dir, seg.seq)} {
			if err := os.Remove(name); err != nil {
				s.log.Error("archive: remove segment", "segment", seg.seq, "err", err)
			}
		}
		seg.release()
		s.log.Debug("archive: segment expired", "segment", seg.seq,
			"states", seg.info.states, "newest", seg.info.maxEnded)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		s.log.Error("archive: sync directory", "err", err)
	}
}

// expired returns how many of the oldest sealed segments the limits drop.
func (s *Store) expired(now time.Time) int {
	var bytes int64
	var states int
	for _, seg := range append(s.sealed[:len(s.sealed):len(s.sealed)], s.open) {
		bytes += seg.info.bytes()
		states += seg.info.states
	}
	drop := 0
	for _, seg := range s.sealed {
		old := s.cfg.MaxAge > 0 && now.Sub(seg.info.maxEnded) > s.cfg.MaxAge
		if !old && (s.cfg.MaxBytes == 0 || bytes <= s.cfg.MaxBytes) &&
			(s.cfg.MaxStates == 0 || states <= s.cfg.MaxStates) {
			break
		}
		bytes -= seg.info.bytes()
		states -= seg.info.states
		drop++
	}
	return drop
}
