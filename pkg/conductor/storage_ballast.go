package conductor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// BallastFile is the storage guard's ballast's name in Config.DataDir.
const BallastFile = "conductor-ballast"

// maxBallast bounds the ballast: room enough for JetStream to restart and
// for thousands of jobs to drain.
const maxBallast = 16 << 20

// ballastSize is the ballast held with a reserve: a quarter of it, at
// most maxBallast.
func ballastSize(reserve uint64) int64 { return int64(min(reserve/4, maxBallast)) }

// ballast is room the storage guard holds on the data disk, in a file of
// its own, to give back when a store meets a write error with the disk
// full: JetStream can then restart, and the jobs queued drain and free
// their room, where otherwise nothing could be written, so nothing acked,
// so nothing freed. It is counted as free room by the guard, and written
// again once the reserve is free besides it. It belongs to the guard's
// goroutine.
type ballast struct {
	path string
	held int64 // the bytes the file holds
}

func newBallast(dir string) *ballast {
	return &ballast{path: filepath.Join(dir, BallastFile)}
}

// load finds the ballast a previous run left.
func (b *ballast) load() error {
	st, err := os.Stat(b.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		b.held = 0
		return nil
	case err != nil:
		return fmt.Errorf("conductor: the storage ballast: %w", err)
	}
	b.held = st.Size()
	return nil
}

// fill makes the ballast size bytes, allocated on the disk.
func (b *ballast) fill(size int64) error {
	if b.held >= size {
		return nil
	}
	f, err := os.OpenFile(b.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("conductor: write the storage ballast: %w", err)
	}
	err = allocate(f, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// Whatever was allocated is given back: the disk is short of room.
		_ = os.Remove(b.path)
		b.held = 0
		return fmt.Errorf("conductor: write the storage ballast: %w", err)
	}
	b.held = size
	return nil
}

// release removes the ballast, giving its room back, and returns how many
// bytes it held.
func (b *ballast) release() (int64, error) {
	if err := os.Remove(b.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("conductor: remove the storage ballast: %w", err)
	}
	n := b.held
	b.held = 0
	return n, nil
}

// writeOut writes f out to size bytes: a file extended by Truncate alone
// would hold no blocks. Not zeros, which some filesystems store as none.
func writeOut(f *os.File, size int64) error {
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = 'b'
	}
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk[:min(int64(len(chunk)), size-off)], off); err != nil {
			return err
		}
	}
	return nil
}
