package conductor

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// The HTTP API's bounds on what its callers hold at once: connections
// (limitListener), event streams and batch bodies being read (limit), and
// how long a body may take to arrive (batchReadTimeout). Each has an
// answer, never a wait without end: a caller past a bound is told 503
// with Retry-After, and the others are served.

// batchReadTimeout bounds the reading of one batch's body: a client that
// sends it a byte at a time holds a batch slot no longer.
const batchReadTimeout = 5 * time.Minute

// limit serves h to at most cap(sem) requests at once; past it, 503.
func limit(sem chan struct{}, what string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
		default:
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("%d %s at once, the most conductord serves; retry later", cap(sem), what))
			return
		}
		defer func() { <-sem }()
		h(w, r)
	}
}

// limitListener accepts at most n connections at once: past them, Accept
// waits for one to close, and the kernel's backlog holds the rest.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
