package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The writes a host with a credential of its own makes through conductord
// (internal/hostsvc): the states and dead entries of its jobs, many in one
// request, so that conductord checks each against the host's job type and
// no host writes the store itself (docs/security.md, "What a host may
// do").

// StoreOp is what a StoreItem asks.
type StoreOp byte

const (
	// StoreState writes a job's state if the key's revision is still Rev
	// (0: if it has none).
	StoreState StoreOp = 's'
	// StoreCreate writes a job's first state: the key has none, or a
	// deleted one.
	StoreCreate StoreOp = 'c'
	// StoreDead indexes a dead job in the dead bucket.
	StoreDead StoreOp = 'd'
)

// StoreItem is one write of a StoreBatch.
type StoreItem struct {
	Op  StoreOp
	Key string        // the job's id
	Rev uint64        // StoreState's expected revision
	TTL time.Duration // how long the state lives; 0: the bucket's TTL
	// Seq is the stream sequence of the job's message: a write that finds
	// no state of the job (a first state, one past a deleted or expired
	// one) shows by it that the id is a job of its type.
	Seq  uint64
	Data []byte // the state (for StoreDead, the dead job's)
}

// StoreResult is the outcome of one StoreItem.
type StoreResult struct {
	Rev      uint64 `json:"rev,omitempty"` // the state's new revision
	Error    string `json:"error,omitempty"`
	Conflict bool   `json:"conflict,omitempty"` // the key's revision was not Rev
}

// MaxStoreItems bounds the items of one batch: a burst of outcomes is at
// most a few hundred.
const MaxStoreItems = 1024

// AppendStoreItem appends it to a batch's encoding: a line
// "<op> <key> <rev> <ttl ns> <seq> <len>\n", then the data. The data is not
// escaped: a batch of states costs their bytes and a line each.
func AppendStoreItem(b []byte, it StoreItem) []byte {
	b = append(b, byte(it.Op), ' ')
	b = append(b, it.Key...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, it.Rev, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(it.TTL), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, it.Seq, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(it.Data)), 10)
	b = append(b, '\n')
	return append(b, it.Data...)
}

// ParseStoreBatch decodes a batch made by AppendStoreItem. The items'
// Data share b.
func ParseStoreBatch(b []byte) ([]StoreItem, error) {
	var items []StoreItem
	for len(b) > 0 {
		if len(items) == MaxStoreItems {
			return nil, fmt.Errorf("store batch: more than %d items", MaxStoreItems)
		}
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 || nl > 512 {
			return nil, fmt.Errorf("store batch: item %d: no header line", len(items)+1)
		}
		f := bytes.Fields(b[:nl])
		if len(f) != 6 || len(f[0]) != 1 {
			return nil, fmt.Errorf("store batch: item %d: bad header %.100q", len(items)+1, b[:nl])
		}
		it := StoreItem{Op: StoreOp(f[0][0]), Key: string(f[1])}
		switch it.Op {
		case StoreState, StoreCreate, StoreDead:
		default:
			return nil, fmt.Errorf("store batch: item %d: unknown op %q", len(items)+1, f[0])
		}
		rev, err1 := strconv.ParseUint(string(f[2]), 10, 64)
		ttl, err2 := strconv.ParseInt(string(f[3]), 10, 64)
		seq, err3 := strconv.ParseUint(string(f[4]), 10, 64)
		n, err4 := strconv.Atoi(string(f[5]))
		if err := errors.Join(err1, err2, err3, err4); err != nil || ttl < 0 || n < 0 {
			return nil, fmt.Errorf("store batch: item %d: bad header %.100q", len(items)+1, b[:nl])
		}
		b = b[nl+1:]
		if n > len(b) {
			return nil, fmt.Errorf("store batch: item %d: %d bytes of data announced, %d left", len(items)+1, n, len(b))
		}
		it.Rev, it.TTL, it.Seq, it.Data = rev, time.Duration(ttl), seq, b[:n:n]
		items = append(items, it)
		b = b[n:]
	}
	return items, nil
}
