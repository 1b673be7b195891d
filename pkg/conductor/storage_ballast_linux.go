package conductor

import (
	"errors"
	"os"
	"syscall"
)

// allocate gives f size bytes of the disk: fallocate reserves the blocks
// (tmpfs its pages) without writing them; where it is not supported, they
// are written.
func allocate(f *os.File, size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return writeOut(f, size)
	}
	return err
}
