package hostsvc

import (
	"net/http"
	"sync"

	"github.com/nats-io/nats.go"
)

// The store's requests wait in a queue per credential, and storeWorkers
// workers take them in turn, a credential at a time: a host that sends
// many requests, or costly ones, waits behind its own, and every other
// host's next request is served after at most one of its. A credential
// holds at most credPending requests and credPendingBytes waiting; past
// them its requests are answered 429 at once. All wait within
// storePending requests and storePendingBytes, past which the server
// drops requests for conductord's subscription (a slow consumer) and
// their hosts, unanswered, write again.

// Bounds of the requests waiting, each credential's.
const (
	credPending      = 64
	credPendingBytes = 16 << 20
)

// fairQueue is the store's requests waiting, by credential. Its
// subscription's callback puts, its workers take, until closed.
type fairQueue struct {
	mu      sync.Mutex
	ready   chan struct{} // a token for each request waiting
	byCred  map[string]*credQueue
	turn    []string // the credentials with requests waiting, in turn
	closed  bool
	pending int // bytes waiting
}

type credQueue struct {
	msgs  []*nats.Msg
	bytes int
}

func newFairQueue() *fairQueue {
	return &fairQueue{ready: make(chan struct{}, storePending), byCred: map[string]*credQueue{}}
}

// put queues m, from credential id; false if it may not wait (its
// credential's bounds, or the queue's, are reached; or it is closed).
func (q *fairQueue) put(id string, m *nats.Msg) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.byCred[id]
	n, bytes := 0, 0
	if c != nil {
		n, bytes = len(c.msgs), c.bytes
	}
	if q.closed || n >= credPending || bytes+len(m.Data) > credPendingBytes || q.pending+len(m.Data) > storePendingBytes {
		return false
	}
	select {
	case q.ready <- struct{}{}:
	default:
		return false // storePending waiting
	}
	if c == nil {
		c = &credQueue{}
		q.byCred[id] = c
		q.turn = append(q.turn, id)
	}
	c.msgs = append(c.msgs, m)
	c.bytes += len(m.Data)
	q.pending += len(m.Data)
	return true
}

// take returns the next request, of the credential whose turn it is, and
// its credential; false once the queue is closed.
func (q *fairQueue) take() (string, *nats.Msg, bool) {
	if _, ok := <-q.ready; !ok {
		return "", nil, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return "", nil, false // the requests still waiting are dropped
	}
	id := q.turn[0]
	c := q.byCred[id]
	m := c.msgs[0]
	c.msgs[0] = nil
	c.msgs = c.msgs[1:]
	c.bytes -= len(m.Data)
	q.pending -= len(m.Data)
	q.turn = q.turn[1:]
	if len(c.msgs) == 0 {
		delete(q.byCred, id)
	} else {
		q.turn = append(q.turn, id) // its next after the others'
	}
	return id, m, true
}

// close ends the takes; the requests waiting are dropped, unanswered.
func (q *fairQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.ready)
	}
}

// queueStore is the subscription's callback: a store request waits its
// credential's turn, or is answered 429 at once.
func (s *Server) queueStore(m *nats.Msg) {
	id, ok := s.caller(m)
	if !ok {
		return
	}
	if !s.store.bytes.AllowN(id, len(m.Data)) || !s.queue.put(id, m) {
		s.answer(m, http.StatusTooManyRequests, errorBody(errTooMany))
	}
}

// storeWorker serves the store's requests in turn until the queue closes.
func (s *Server) storeWorker() {
	for {
		id, m, ok := s.queue.take()
		if !ok {
			return
		}
		s.storeReq(id, m)
	}
}
