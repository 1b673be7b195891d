package archive

import (
	"bytes"
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
