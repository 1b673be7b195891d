package archive

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"sync"
	"time"
)

// readBufs holds the buffers Gets read index windows and records into.
var readBufs = sync.Pool{New: func() any {
	b := make([]byte, searchWindow*entrySize)
	return &b
}}

// An index file is a 64-byte header, the entries sorted by hash, then the
// Bloom filter:
//
//	magic      [8]byte  "CNDARCI1"
//	count      uint64   entries
//	dataSize   uint64   of the data file the index covers
//	minEnded   int64    Unix ns
//	maxEnded   int64    Unix ns
//	records    uint64   in the data file
//	words      uint32   of the filter, 8 bytes each
//	entriesCRC uint32   CRC-32C of the entries
//	bloomCRC   uint32   CRC-32C of the filter
//	headerCRC  uint32   CRC-32C of the 60 bytes before it
//	entry      hash uint64 | offset uint32   (12 bytes, count of them)
//	filter     words × uint64
const (
	indexMagic = "CNDARCI2"
	// oldIndexMagic marks the indexes of the first format, whose filters
	// were not blocked: Open rebuilds them, as an upgrade, not damage.
	oldIndexMagic = "CNDARCI1"
	indexHeader   = 64
	entrySize     = 12
	// searchWindow is how many entries one read of a lookup covers.
	searchWindow = 512
)

var (
	errBadIndex = errors.New("archive: bad index")
	errOldIndex = errors.New("archive: index of an older format")
)

type indexEntry struct {
	hash uint64
	off  uint32
}

// sealing is what sealing a segment sets.
type sealing struct {
	index *os.File
	count int
	bloom bloom
	info  segInfo
}

// writeIndex writes the index of seg, whose ids are at the offsets in ids,
// and returns what the sealed segment will hold.
func (seg *segment) writeIndex(ids map[string]uint32) (sealing, error) {
	entries := make([]indexEntry, 0, len(ids))
	for id, off := range ids {
		entries = append(entries, indexEntry{hashID(id), off})
	}
	return seg.writeEntries(entries)
}

// writeEntries writes an index of entries, in any order.
func (seg *segment) writeEntries(entries []indexEntry) (sealing, error) {
	slices.SortFunc(entries, func(a, b indexEntry) int {
		return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.off, b.off))
	})
	bl := newBloom(len(entries))
	body := make([]byte, 0, len(entries)*entrySize+len(bl)*8)
	for _, e := range entries {
		bl.add(e.hash)
		body = binary.LittleEndian.AppendUint64(body, e.hash)
		body = binary.LittleEndian.AppendUint32(body, e.off)
	}
	nEntries := len(body)
	for _, w := range bl {
		body = binary.LittleEndian.AppendUint64(body, w)
	}
	h := make([]byte, indexHeader)
	copy(h, indexMagic)
	le := binary.LittleEndian
	le.PutUint64(h[8:], uint64(len(entries)))
	le.PutUint64(h[16:], uint64(seg.info.size))
	le.PutUint64(h[24:], uint64(seg.info.minEnded.UnixNano()))
	le.PutUint64(h[32:], uint64(seg.info.maxEnded.UnixNano()))
	le.PutUint64(h[40:], uint64(seg.info.records))
	le.PutUint32(h[48:], uint32(len(bl)))
	le.PutUint32(h[52:], crc32.Checksum(body[:nEntries], castagnoli))
	le.PutUint32(h[56:], crc32.Checksum(body[nEntries:], castagnoli))
	le.PutUint32(h[60:], crc32.Checksum(h[:60], castagnoli))

	name := indexName(seg.dir, seg.seq)
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return sealing{}, fmt.Errorf("archive: seal segment %016x: %w", seg.seq, err)
	}
	_, err = f.Write(append(h, body...))
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = seg.data.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err == nil {
		err = syncDir(seg.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return sealing{}, fmt.Errorf("archive: seal segment %016x: %w", seg.seq, err)
	}
	info := seg.info
	info.states = len(entries)
	info.idxSize = int64(indexHeader + len(body))
	return sealing{index: f, count: len(entries), bloom: bl, info: info}, nil
}

// sealWith makes seg sealed.
func (seg *segment) sealWith(sl sealing) {
	seg.index, seg.count, seg.bloom, seg.info = sl.index, sl.count, sl.bloom, sl.info
}

// loadIndex opens seg's index, checks it whole against the data file and
// loads its filter: on return seg is sealed. It returns an error wrapping
// os.ErrNotExist if there is no index, errOldIndex, or errBadIndex.
func (seg *segment) loadIndex() error {
	f, err := os.Open(indexName(seg.dir, seg.seq))
	if err != nil {
		return err
	}
	if err := seg.checkIndex(f); err != nil {
		f.Close()
		if errors.Is(err, errOldIndex) {
			return err
		}
		return fmt.Errorf("%w: segment %016x: %v", errBadIndex, seg.seq, err)
	}
	seg.index = f
	return nil
}

func (seg *segment) checkIndex(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, fi.Size()), 64<<10)
	h := make([]byte, indexHeader)
	if _, err := io.ReadFull(r, h); err != nil {
		return err
	}
	le := binary.LittleEndian
	if string(h[:8]) == oldIndexMagic {
		return errOldIndex
	}
	if string(h[:8]) != indexMagic || le.Uint32(h[60:]) != crc32.Checksum(h[:60], castagnoli) {
		return errors.New("header")
	}
	count, dataSize, words := le.Uint64(h[8:]), int64(le.Uint64(h[16:])), uint64(le.Uint32(h[48:]))
	if count > uint64(fi.Size())/entrySize || indexHeader+count*entrySize+words*8 != uint64(fi.Size()) {
		return errors.New("size")
	}
	if dataSize != seg.info.size {
		return fmt.Errorf("covers %d data bytes of %d", dataSize, seg.info.size)
	}
	crc := uint32(0)
	buf := make([]byte, 64<<10)
	for left := int64(count) * entrySize; left > 0; {
		n, err := io.ReadFull(r, buf[:min(left, int64(len(buf)))])
		if err != nil {
			return err
		}
		crc = crc32.Update(crc, castagnoli, buf[:n])
		left -= int64(n)
	}
	if crc != le.Uint32(h[52:]) {
		return errors.New("entries checksum")
	}
	raw := make([]byte, words*8)
	if _, err := io.ReadFull(r, raw); err != nil {
		return err
	}
	if crc32.Checksum(raw, castagnoli) != le.Uint32(h[56:]) || words == 0 || words%bloomBlockWords != 0 {
		return errors.New("filter checksum")
	}
	bl := make(bloom, words)
	for i := range bl {
		bl[i] = le.Uint64(raw[i*8:])
	}
	seg.bloom, seg.count = bl, int(count)
	seg.info.states = int(count)
	seg.info.records = int(le.Uint64(h[40:]))
	seg.info.minEnded = time.Unix(0, int64(le.Uint64(h[24:]))).UTC()
	seg.info.maxEnded = time.Unix(0, int64(le.Uint64(h[32:]))).UTC()
	seg.info.idxSize = fi.Size()
	return nil
}

// find returns the state of id, whose hash is h, if the sealed segment
// holds it.
func (seg *segment) find(id string, h uint64) ([]byte, bool, error) {
	if !seg.bloom.has(h) {
		return nil, false, nil
	}
	offs, err := seg.search(h)
	if err != nil {
		return nil, false, err
	}
	for _, off := range offs {
		state, ok, err := seg.readState(int64(off), id)
		if ok || err != nil {
			return state, ok, err
		}
	}
	return nil, false, nil
}

// search returns the offsets the index holds for h. It guesses where h is
// from its value (hashes spread evenly), reads searchWindow entries
// around the guess, and narrows the range to guess again if h is not
// inside them: one read, most of the time.
func (seg *segment) search(h uint64) ([]uint32, error) {
	lo, hi := 0, seg.count // h is in entries [lo, hi) if anywhere
	loH, hiH := uint64(0), ^uint64(0)
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for lo < hi {
		start, end := lo, hi
		if hi-lo > searchWindow {
			frac := float64(h-loH) / (float64(hiH-loH) + 1)
			guess := lo + int(frac*float64(hi-lo))
			start = min(max(lo, guess-searchWindow/2), hi-searchWindow)
			end = start + searchWindow
		}
		b := buf[:(end-start)*entrySize]
		if _, err := seg.index.ReadAt(b, indexHeader+int64(start)*entrySize); err != nil {
			return nil, fmt.Errorf("archive: read index %016x: %w", seg.seq, err)
		}
		first := binary.LittleEndian.Uint64(b)
		last := binary.LittleEndian.Uint64(b[len(b)-entrySize:])
		switch {
		case h < first && start > lo:
			hi, hiH = start, first
		case h > last && end < hi:
			lo, loH = end, last
		default:
			offs := matches(b, h)
			if len(offs) > 0 && (start > 0 && first == h || end < seg.count && last == h) {
				// Ids whose hashes collide, on both sides of the window.
				return seg.run(h, buf)
			}
			return offs, nil
		}
	}
	return nil, nil
}

// run returns the offsets of all the entries for h, however many, by a
// binary search for the first one.
func (seg *segment) run(h uint64, buf []byte) ([]uint32, error) {
	lo, hi := 0, seg.count
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if _, err := seg.index.ReadAt(buf[:8], indexHeader+int64(m)*entrySize); err != nil {
			return nil, fmt.Errorf("archive: read index %016x: %w", seg.seq, err)
		}
		if binary.LittleEndian.Uint64(buf) < h {
			lo = m + 1
		} else {
			hi = m
		}
	}
	var offs []uint32
	for start := lo; start < seg.count; start += searchWindow {
		b := buf[:min(searchWindow, seg.count-start)*entrySize]
		if _, err := seg.index.ReadAt(b, indexHeader+int64(start)*entrySize); err != nil {
			return nil, fmt.Errorf("archive: read index %016x: %w", seg.seq, err)
		}
		more := matches(b, h)
		offs = append(offs, more...)
		if len(more) < len(b)/entrySize {
			break
		}
	}
	return offs, nil
}

// matches returns the offsets of the entries in b with hash h.
func matches(b []byte, h uint64) []uint32 {
	n := len(b) / entrySize
	var offs []uint32
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if binary.LittleEndian.Uint64(b[m*entrySize:]) < h {
			lo = m + 1
		} else {
			hi = m
		}
	}
	for ; lo < n && binary.LittleEndian.Uint64(b[lo*entrySize:]) == h; lo++ {
		offs = append(offs, binary.LittleEndian.Uint32(b[lo*entrySize+8:]))
	}
	return offs
}
