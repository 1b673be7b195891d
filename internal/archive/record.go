package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// The limits on what Put accepts.
const (
	// MaxIDLen is the longest job id, in bytes.
	MaxIDLen = 256
	// MaxStateLen is the largest state, in bytes.
	MaxStateLen = 16 << 20
)

// A record on disk is a 12-byte header and a body:
//
//	magic  uint32  recordMagic
//	length uint32  of the body
//	crc    uint32  CRC-32C of the length's 4 bytes and the body
//	body   ended int64 (Unix ns) | idLen uint16 | id | state
const (
	recordMagic  = 0xC0DA7A5E
	recordHeader = 12
	bodyFixed    = 8 + 2
	maxBody      = bodyFixed + MaxIDLen + MaxStateLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord is what decodeRecord returns for bytes that are not a whole,
// intact record.
var errBadRecord = errors.New("archive: bad record")

// errShortRecord is what decodeRecord returns when the bytes end inside a
// record that may be whole once more bytes are read.
var errShortRecord = errors.New("archive: short record")

// record is one decoded record; id and state alias the decoded bytes.
type record struct {
	ended time.Time
	id    []byte
	state []byte
}

// checkEntry returns why e may not be stored, or nil.
func checkEntry(e Entry) error {
	switch {
	case e.ID == "":
		return ErrEmptyID
	case len(e.ID) > MaxIDLen:
		return fmt.Errorf("%w: %d bytes", ErrIDTooLong, len(e.ID))
	case len(e.State) > MaxStateLen:
		return fmt.Errorf("%w: job %q: %d bytes", ErrStateTooLarge, e.ID, len(e.State))
	}
	return nil
}

// recordLen is the size on disk of e's record.
func recordLen(e Entry) int {
	return recordHeader + bodyFixed + len(e.ID) + len(e.State)
}

// appendRecord appends e, which checkEntry accepted, as a record.
func appendRecord(b []byte, e Entry) []byte {
	start := len(b)
	body := bodyFixed + len(e.ID) + len(e.State)
	b = binary.LittleEndian.AppendUint32(b, recordMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(body))
	b = binary.LittleEndian.AppendUint32(b, 0) // crc, below
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Ended.UnixNano()))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(e.ID)))
	b = append(b, e.ID...)
	b = append(b, e.State...)
	crc := crc32.Update(0, castagnoli, b[start+4:start+8])
	crc = crc32.Update(crc, castagnoli, b[start+recordHeader:])
	binary.LittleEndian.PutUint32(b[start+8:], crc)
	return b
}

// peekLen returns the size of the record b starts with, from its header
// alone, or errShortRecord if b is shorter than a header, or errBadRecord.
func peekLen(b []byte) (int, error) {
	if len(b) < recordHeader {
		return 0, errShortRecord
	}
	if binary.LittleEndian.Uint32(b) != recordMagic {
		return 0, errBadRecord
	}
	body := binary.LittleEndian.Uint32(b[4:])
	if body < bodyFixed || body > maxBody {
		return 0, errBadRecord
	}
	return recordHeader + int(body), nil
}

// decodeRecord decodes the record b starts with and returns it and its
// size. It returns errShortRecord if b ends inside the record, and
// errBadRecord if b does not start with an intact record.
func decodeRecord(b []byte) (record, int, error) {
	n, err := peekLen(b)
	if err != nil {
		return record{}, 0, err
	}
	if len(b) < n {
		return record{}, 0, errShortRecord
	}
	crc := crc32.Update(0, castagnoli, b[4:8])
	crc = crc32.Update(crc, castagnoli, b[recordHeader:n])
	if crc != binary.LittleEndian.Uint32(b[8:]) {
		return record{}, 0, errBadRecord
	}
	body := b[recordHeader:n]
	idLen := int(binary.LittleEndian.Uint16(body[8:]))
	if idLen == 0 || idLen > MaxIDLen || bodyFixed+idLen > len(body) {
		return record{}, 0, errBadRecord
	}
	return record{
		ended: time.Unix(0, int64(binary.LittleEndian.Uint64(body))).UTC(),
		id:    body[bodyFixed : bodyFixed+idLen],
		state: body[bodyFixed+idLen:],
	}, n, nil
}
