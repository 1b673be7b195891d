//go:build unix

package worker

import (
	"fmt"
	"os"
	"syscall"

	"github.com/conductor-run/conductor/internal/proto"
)

// openChannel returns the files of the descriptors workerd opened for the
// process: fd 3 to read its messages, fd 4 to write ours.
func openChannel() (in, out *os.File, err error) {
	for _, fd := range []int{proto.FDToWorker, proto.FDFromWorker} {
		if err := checkChannelFD(fd); err != nil {
			return nil, nil, err
		}
	}
	// A non-blocking descriptor makes os.NewFile use the runtime poller, so
	// that Close interrupts a pending Read (Run's reader can end) or Write
	// (Run does not wait on a write that workerd does not read).
	for _, fd := range []int{proto.FDToWorker, proto.FDFromWorker} {
		if err := syscall.SetNonblock(fd, true); err != nil {
			return nil, nil, fmt.Errorf("worker: fd %d: set non-blocking: %w", fd, err)
		}
	}
	in = os.NewFile(proto.FDToWorker, "conductor-in")
	out = os.NewFile(proto.FDFromWorker, "conductor-out")
	return in, out, nil
}

// checkChannelFD reports whether fd can be one end of workerd's channel: an
// open pipe or socket. Being open is not enough: when the process did not
// inherit fds 3 and 4, the Go runtime itself may hold them (it keeps cgroup
// files open to follow the CPU limit).
func checkChannelFD(fd int) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fmt.Errorf("worker: fd %d is not open: this program must be started by workerd (see docs/protocol.md)", fd)
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFIFO, syscall.S_IFSOCK:
		return nil
	}
	return fmt.Errorf("worker: fd %d is not a pipe: this program must be started by workerd (see docs/protocol.md)", fd)
}
