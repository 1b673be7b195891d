package broker

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Limits of the output kept from worker processes.
const (
	// maxOutputLine caps one line of a worker's stdout or stderr; the rest
	// of a longer line is dropped.
	maxOutputLine = 64 << 10
	// tailLines is the number of stderr lines kept per process.
	tailLines = 20
	// tailLineBytes caps one kept stderr line.
	tailLineBytes = 512
	// crashTailLines and crashTailBytes bound the stderr quoted in the
	// Outcome of a crash.
	crashTailLines = 5
	crashTailBytes = 960
)

// readLines calls emit with each line of r (without its newline) until r
// ends. A line over max bytes is cut to max and marked truncated. Memory
// stays bounded by max whatever the writer does; a slow emit slows the
// writer (its pipe fills), never the pool.
func readLines(r io.Reader, max int, emit func(line []byte, truncated bool)) {
	br := bufio.NewReaderSize(r, max)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			emit(bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'}), false)
		case errors.Is(err, bufio.ErrBufferFull):
			emit(line, true)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return
			}
		default:
			if len(line) > 0 {
				emit(line, false)
			}
			return
		}
	}
}

// logOutput feeds each line of one stream of a worker process to tail, if
// not nil, and to output, or, without output, logs it at Info: whoever takes
// the output (workerd's agent) logs what it keeps, under its rate limit. It
// returns when r ends or is closed.
func logOutput(log *slog.Logger, r io.Reader, stream string, pid int, tail *tail, output func(stream string, pid int, line string)) {
	readLines(r, maxOutputLine, func(line []byte, truncated bool) {
		s := string(line)
		if truncated {
			s += " [truncated]"
		}
		if tail != nil {
			tail.add(s)
		}
		if output != nil {
			output(stream, pid, s)
		} else {
			log.Info("worker output", "pid", pid, "stream", stream, "line", s)
		}
	})
}

// tail keeps the last tailLines lines of a stream. It is written by the
// stream's reader goroutine and read by the slot goroutine.
type tail struct {
	mu    sync.Mutex
	lines [tailLines]string // ring; guarded by mu
	n     int               // lines ever added; guarded by mu
}

func (t *tail) add(line string) {
	if len(line) > tailLineBytes {
		line = strings.ToValidUTF8(line[:tailLineBytes], "") + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines[t.n%tailLines] = line
	t.n++
}

// last returns up to n of the latest lines, oldest first, joined with " | "
// and cut from the front to at most max bytes.
func (t *tail) last(n, max int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	n = min(n, t.n, tailLines)
	parts := make([]string, 0, n)
	for i := t.n - n; i < t.n; i++ {
		parts = append(parts, t.lines[i%tailLines])
	}
	s := strings.Join(parts, " | ")
	if len(s) > max {
		s = "…" + strings.ToValidUTF8(s[len(s)-max:], "")
	}
	return s
}
