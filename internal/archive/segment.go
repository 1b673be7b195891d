package archive

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// A data file starts with a 24-byte header:
//
//	magic   [8]byte  "CNDARCD1"
//	created int64    Unix ns, when the segment was opened for writing
//	_       uint32   zero
//	crc     uint32   CRC-32C of the 20 bytes before it
const (
	dataMagic  = "CNDARCD1"
	dataHeader = 24
	// maxDataSize is where a segment is sealed whatever its count: the
	// index stores offsets as uint32.
	maxDataSize = 1 << 30
)

// segment is one data file and, once sealed, its index.
//
// seq, data and created never change. A sealed segment's fields never
// change either; an open segment's info is written by the holder of
// Store.writeMu with Store.mu held, and read with either held.
type segment struct {
	seq     uint64
	dir     string
	data    *os.File
	created time.Time
	info    segInfo

	// Set once sealed, before the segment is shared.
	index *os.File
	count int // entries in the index
	bloom bloom

	// refs counts the store's list (1 while listed) and the Gets reading
	// the segment; the files are closed when it drops to 0.
	refs atomic.Int32
}

// segInfo is what Stats and retention need of a segment.
type segInfo struct {
	size     int64 // of the data file: the offset of the next record
	records  int   // in the data file, a state put again counted again
	states   int   // distinct ids
	minEnded time.Time
	maxEnded time.Time
	idxSize  int64
}

// bytes is what the segment holds on disk.
func (i segInfo) bytes() int64 { return i.size + i.idxSize }

// add counts a record of a state that ended at ended.
func (i *segInfo) add(ended time.Time) {
	ended = time.Unix(0, ended.UnixNano()).UTC() // as stored
	if i.records == 0 || ended.Before(i.minEnded) {
		i.minEnded = ended
	}
	if i.records == 0 || ended.After(i.maxEnded) {
		i.maxEnded = ended
	}
	i.records++
}

func dataName(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x.data", seq))
}

func indexName(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x.index", seq))
}

// createSegment creates the data file of a new open segment.
func createSegment(dir string, seq uint64, now time.Time) (*segment, error) {
	f, err := os.OpenFile(dataName(dir, seq), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("archive: create segment: %w", err)
	}
	h := make([]byte, dataHeader)
	copy(h, dataMagic)
	binary.LittleEndian.PutUint64(h[8:], uint64(now.UnixNano()))
	binary.LittleEndian.PutUint32(h[20:], crc32.Checksum(h[:20], castagnoli))
	if _, err := f.WriteAt(h, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("archive: create segment: %w", err)
	}
	seg := &segment{seq: seq, dir: dir, data: f, created: now, info: segInfo{size: dataHeader}}
	seg.refs.Store(1)
	return seg, nil
}

// openSegment opens the data file of an existing segment and checks its
// header.
func openSegment(dir string, seq uint64) (*segment, error) {
	f, err := os.OpenFile(dataName(dir, seq), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.Size() < dataHeader {
		f.Close()
		return nil, errEmptySegment
	}
	h := make([]byte, dataHeader)
	if _, err := f.ReadAt(h, 0); err != nil ||
		string(h[:8]) != dataMagic ||
		binary.LittleEndian.Uint32(h[20:]) != crc32.Checksum(h[:20], castagnoli) {
		f.Close()
		return nil, errBadHeader
	}
	seg := &segment{
		seq:     seq,
		dir:     dir,
		data:    f,
		created: time.Unix(0, int64(binary.LittleEndian.Uint64(h[8:]))).UTC(),
		info:    segInfo{size: fi.Size()},
	}
	seg.refs.Store(1)
	return seg, nil
}

var (
	errBadHeader    = errors.New("archive: bad segment header")
	errEmptySegment = errors.New("archive: segment without header")
)

// tryAcquire takes a reference unless the segment's files are closed.
func (seg *segment) tryAcquire() bool {
	for {
		n := seg.refs.Load()
		if n <= 0 {
			return false
		}
		if seg.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference and closes the files with the last one.
func (seg *segment) release() {
	if seg.refs.Add(-1) == 0 {
		seg.data.Close()
		if seg.index != nil {
			seg.index.Close()
		}
	}
}

// readState reads the record at off and returns a copy of its state if
// its id is id.
func (seg *segment) readState(off int64, id string) ([]byte, bool, error) {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := (*bp)[:1024]
	n, err := seg.data.ReadAt(buf, off)
	if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return nil, false, fmt.Errorf("archive: read segment %016x: %w", seg.seq, err)
	}
	buf = buf[:n]
	size, err := peekLen(buf)
	if err == nil && size > len(buf) {
		buf = append(buf[:n:n], make([]byte, size-n)...) // a large state: not pooled
		_, err = seg.data.ReadAt(buf[n:], off+int64(n))
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: segment %016x offset %d: %v", ErrCorrupt, seg.seq, off, err)
	}
	rec, _, err := decodeRecord(buf)
	if err != nil {
		return nil, false, fmt.Errorf("%w: segment %016x offset %d: %v", ErrCorrupt, seg.seq, off, err)
	}
	if string(rec.id) != id {
		return nil, false, nil
	}
	return bytes.Clone(rec.state), true, nil
}

// scanResult is what scanning a data file found.
type scanResult struct {
	end            int64 // after the last intact record
	skippedRecords int   // damaged stretches between intact records
	skippedBytes   int64
	tornBytes      int64 // after the last intact record
}

// scan calls fn with each intact record of the data file, of size bytes,
// and its offset, in order. A damaged stretch is skipped up to the next
// intact record; one after the last intact record is a torn tail. fn must
// copy what it keeps of the record.
func scan(f io.ReaderAt, size int64, fn func(off int64, rec record)) (scanResult, error) {
	w := window{f: f, size: size}
	var res scanResult
	pos := int64(dataHeader)
	for pos < size {
		rec, n, err := w.record(pos)
		if err == nil {
			fn(pos, rec)
			pos += int64(n)
			continue
		}
		if !errors.Is(err, errBadRecord) && !errors.Is(err, errShortRecord) {
			return res, err
		}
		next, err := w.resync(pos + 1)
		if err != nil {
			return res, err
		}
		if next < 0 {
			break
		}
		res.skippedRecords++
		res.skippedBytes += next - pos
		pos = next
	}
	res.end = min(pos, size)
	res.tornBytes = size - res.end
	return res, nil
}

// window reads a file through a buffer of at least windowSize bytes.
type window struct {
	f     io.ReaderAt
	size  int64
	buf   []byte
	start int64
}

const windowSize = 1 << 20

// at returns up to n bytes at pos: fewer only at the end of the file. The
// bytes are valid until the next call.
func (w *window) at(pos int64, n int) ([]byte, error) {
	n = int(min(int64(n), w.size-pos))
	if n <= 0 {
		return nil, nil
	}
	if pos >= w.start && pos+int64(n) <= w.start+int64(len(w.buf)) {
		return w.buf[pos-w.start : pos-w.start+int64(n)], nil
	}
	want := int(min(int64(max(n, windowSize)), w.size-pos))
	if cap(w.buf) < want {
		w.buf = make([]byte, want)
	}
	w.buf = w.buf[:want]
	w.start = pos
	if _, err := w.f.ReadAt(w.buf, pos); err != nil && !errors.Is(err, io.EOF) {
		w.buf = w.buf[:0]
		return nil, err
	}
	return w.buf[:n], nil
}

// record decodes the record at pos.
func (w *window) record(pos int64) (record, int, error) {
	b, err := w.at(pos, recordHeader)
	if err != nil {
		return record{}, 0, err
	}
	n, err := peekLen(b)
	if err != nil {
		return record{}, 0, err
	}
	if b, err = w.at(pos, n); err != nil {
		return record{}, 0, err
	}
	return decodeRecord(b)
}

// resync returns the offset of the first intact record at or after pos,
// or -1 if there is none.
func (w *window) resync(pos int64) (int64, error) {
	magic := binary.LittleEndian.AppendUint32(nil, recordMagic)
	for pos+recordHeader <= w.size {
		b, err := w.at(pos, windowSize)
		if err != nil {
			return 0, err
		}
		i := bytes.Index(b, magic)
		if i < 0 {
			pos += int64(len(b) - len(magic) + 1)
			continue
		}
		if _, _, err := w.record(pos + int64(i)); err == nil {
			return pos + int64(i), nil
		}
		pos += int64(i) + 1
	}
	return -1, nil
}
