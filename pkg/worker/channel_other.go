//go:build !unix

package worker

import (
	"errors"
	"os"
)

// openChannel fails: the file descriptor channel needs a Unix system. Use
// WithChannel elsewhere.
func openChannel() (in, out *os.File, err error) {
	return nil, nil, errors.New("worker: the fd 3/4 channel needs a Unix system; use WithChannel")
}
