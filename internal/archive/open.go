package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Open opens the store in cfg.Dir, creating it if need be. It loads the
// filter of each sealed segment, rebuilds the indexes found missing or
// damaged, and reads the open segment's data file again; damage found is
// counted in Stats and logged in one line.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("archive: no directory")
	}
	if cfg.MaxAge < 0 || cfg.MaxBytes < 0 || cfg.MaxStates < 0 || cfg.SegmentStates < 0 || cfg.SegmentAge < 0 {
		return nil, errors.New("archive: negative limit")
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, log: cfg.Logger, now: time.Now, lock: lock}
	if err := s.load(); err != nil {
		if lock != nil {
			lock.Close()
		}
		for _, seg := range s.sealed {
			seg.release()
		}
		if s.open != nil {
			s.open.release()
		}
		return nil, err
	}
	if d := s.damage; !d.Zero() {
		level := slog.LevelError
		if d.TornBytes == 0 && d.SkippedRecords == 0 && d.SegmentsLost == 0 {
			level = slog.LevelWarn // nothing lost
		}
		s.log.Log(context.Background(), level, "archive: damaged files found and repaired",
			"dir", cfg.Dir,
			"segments", s.damaged,
			"torn_bytes", d.TornBytes,
			"skipped_records", d.SkippedRecords,
			"skipped_bytes", d.SkippedBytes,
			"indexes_rebuilt", d.IndexesRebuilt,
			"segments_lost", d.SegmentsLost)
	}
	return s, nil
}

// repaired logs, at Info (Open's summary is the warning), what was done
// to segment seq.
func (s *Store) repaired(seq uint64, what string, args ...any) {
	name := fmt.Sprintf("%016x", seq)
	if !slices.Contains(s.damaged, name) {
		s.damaged = append(s.damaged, name)
	}
	s.log.Info("archive: "+what, append([]any{"segment", name}, args...)...)
}

// load reads the directory into s.
func (s *Store) load() error {
	data, index, err := s.list()
	if err != nil {
		return err
	}
	for seq := range index {
		if !slices.Contains(data, seq) {
			s.repaired(seq, "index without data file removed")
			s.damage.SegmentsLost++
			os.Remove(indexName(s.cfg.Dir, seq))
		}
	}
	for len(data) > 0 && emptyData(dataName(s.cfg.Dir, data[len(data)-1])) {
		// Created, not yet written: the segment before it is the last.
		os.Remove(dataName(s.cfg.Dir, data[len(data)-1]))
		data = data[:len(data)-1]
	}
	for i, seq := range data {
		if err := s.loadSegment(seq, i == len(data)-1); err != nil {
			return err
		}
	}
	if s.open == nil {
		if len(data) > 0 {
			s.nextSeq = data[len(data)-1] + 1
		}
		if s.open, err = createSegment(s.cfg.Dir, s.nextSeq, s.now()); err != nil {
			return err
		}
		if err := syncDir(s.cfg.Dir); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		s.openIDs = make(map[string]uint32)
	}
	s.nextSeq = s.open.seq + 1
	return nil
}

// emptyData reports whether the data file name is shorter than its
// header.
func emptyData(name string) bool {
	fi, err := os.Stat(name)
	return err == nil && fi.Size() < dataHeader
}

// list returns the sequence numbers of the data files, sorted, and of the
// index files, and removes what a crash left half-written.
func (s *Store) list() (data []uint64, index map[uint64]bool, err error) {
	des, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, nil, fmt.Errorf("archive: %w", err)
	}
	index = make(map[uint64]bool)
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(s.cfg.Dir, name))
			continue
		}
		base, ext, _ := strings.Cut(name, ".")
		seq, err := strconv.ParseUint(base, 16, 64)
		if err != nil || len(base) != 16 {
			continue
		}
		switch ext {
		case "data":
			data = append(data, seq)
		case "index":
			index[seq] = true
		}
	}
	slices.Sort(data)
	return data, index, nil
}

// loadSegment opens segment seq; the last one is open for writing unless
// it has an index.
func (s *Store) loadSegment(seq uint64, last bool) error {
	seg, err := openSegment(s.cfg.Dir, seq)
	switch {
	case errors.Is(err, errEmptySegment):
		os.Remove(dataName(s.cfg.Dir, seq)) // created, not yet written
		return nil
	case errors.Is(err, errBadHeader):
		s.repaired(seq, "unreadable data file set aside as .bad")
		s.damage.SegmentsLost++
		name := dataName(s.cfg.Dir, seq)
		os.Remove(indexName(s.cfg.Dir, seq))
		return os.Rename(name, name+".bad")
	case err != nil:
		return fmt.Errorf("archive: open segment %016x: %w", seq, err)
	}
	err = seg.loadIndex()
	if err == nil {
		s.sealed = append(s.sealed, seg)
		return nil
	}
	switch {
	case errors.Is(err, errOldIndex):
		s.log.Info("archive: index of an older format rebuilt", "segment", fmt.Sprintf("%016x", seq))
	case !errors.Is(err, os.ErrNotExist) || !last:
		s.repaired(seq, "index rebuilt", "err", err)
		s.damage.IndexesRebuilt++
	}
	if last {
		os.Remove(indexName(s.cfg.Dir, seq)) // the segment is open again
	}
	ids, err := s.recoverData(seg)
	if err == nil && !last {
		var sl sealing
		if sl, err = seg.writeIndex(ids); err == nil {
			seg.sealWith(sl)
			s.sealed = append(s.sealed, seg)
			return nil
		}
	}
	if err != nil {
		seg.release()
		return err
	}
	s.open, s.openIDs = seg, ids
	return nil
}

// recoverData reads seg's data file, cuts a torn tail away, and returns
// the offset of the newest record of each id.
func (s *Store) recoverData(seg *segment) (map[string]uint32, error) {
	ids := make(map[string]uint32)
	info := segInfo{}
	res, err := scan(seg.data, seg.info.size, func(off int64, rec record) {
		ids[string(rec.id)] = uint32(off)
		info.add(rec.ended)
	})
	if err != nil {
		return nil, fmt.Errorf("archive: read segment %016x: %w", seg.seq, err)
	}
	if res.tornBytes > 0 || res.skippedRecords > 0 {
		s.repaired(seg.seq, "damaged records dropped",
			"torn_bytes", res.tornBytes, "skipped_records", res.skippedRecords,
			"skipped_bytes", res.skippedBytes)
	}
	if res.tornBytes > 0 {
		if err := seg.data.Truncate(res.end); err != nil {
			return nil, fmt.Errorf("archive: truncate segment %016x: %w", seg.seq, err)
		}
	}
	s.damage.TornBytes += res.tornBytes
	s.damage.SkippedRecords += res.skippedRecords
	s.damage.SkippedBytes += res.skippedBytes
	info.size = res.end
	info.states = len(ids)
	seg.info = info
	return ids, nil
}
