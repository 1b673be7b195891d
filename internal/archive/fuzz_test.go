package archive

import (
	"bytes"
	"log/slog"
	"os"
	"testing"
	"time"
)

func FuzzDecodeRecord(f *testing.F) {
	rec := appendRecord(nil, Entry{ID: "job-1", Ended: time.Unix(1, 2), State: []byte(`{"a":1}`)})
	f.Add(rec)
	f.Add(rec[:len(rec)-1])
	f.Add(append(rec, rec...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := decodeRecord(b)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("decoded %d bytes of %d", n, len(b))
		}
		again := appendRecord(nil, Entry{ID: string(r.id), Ended: r.ended, State: r.state})
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("decoded %q, encodes again as %q", b[:n], again)
		}
	})
}

// FuzzScan reads any bytes after a data file's header: every byte is an
// intact record's, skipped or torn.
func FuzzScan(f *testing.F) {
	rec := appendRecord(nil, Entry{ID: "job-1", Ended: time.Unix(1, 2), State: []byte(`{"a":1}`)})
	f.Add(append(append([]byte{}, rec...), rec...))
	f.Add(append(append([]byte{}, rec[:20]...), rec...))
	f.Add(append(append([]byte{}, rec...), rec[:20]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		seg, err := createSegment(t.TempDir(), 0, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer seg.release()
		if _, err := seg.data.WriteAt(b, dataHeader); err != nil {
			t.Fatal(err)
		}
		var intact int64
		res, err := scan(seg.data, dataHeader+int64(len(b)), func(off int64, r record) {
			intact += int64(recordHeader + bodyFixed + len(r.id) + len(r.state))
		})
		if err != nil {
			t.Fatal(err)
		}
		if intact+res.skippedBytes+res.tornBytes != int64(len(b)) {
			t.Fatalf("%d bytes: %d intact, %d skipped, %d torn", len(b), intact, res.skippedBytes, res.tornBytes)
		}
	})
}

// FuzzIndex opens a segment with any bytes for its index: Open uses the
// index or rebuilds it, and lookups never panic.
func FuzzIndex(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(Config{Dir: dir, SegmentStates: 3, Logger: discard})
	if err != nil {
		f.Fatal(err)
	}
	es := entries(testT0, 0, 3, 1)
	if err := s.Put(es...); err != nil {
		f.Fatal(err)
	}
	s.Close()
	data, err := os.ReadFile(dataName(dir, 0))
	if err != nil {
		f.Fatal(err)
	}
	index, err := os.ReadFile(indexName(dir, 0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(index)
	f.Add(index[:indexHeader])
	f.Fuzz(func(t *testing.T, index []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(dataName(dir, 0), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(indexName(dir, 0), index, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Config{Dir: dir, Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, e := range es {
			state, ok, err := s.Get(e.ID)
			if err == nil && ok && !bytes.Equal(state, e.State) {
				t.Fatalf("%s: %q", e.ID, state)
			}
		}
	})
}

var discard = slog.New(slog.DiscardHandler)
