package hostsvc

import (
	"errors"
	"sync"

	"github.com/conductor-run/conductor/internal/ratemap"
)

// The rate of each credential's requests for consumers and cancel pages:
// a workerd asks for a pool's consumers at its start and reads the
// cancels at its start, after a reconnect and every FollowCheck; a host
// asking far more often is answered 429 at once, so that it holds up no
// other host's requests, which are answered in turn.
const (
	pageRate     = 20  // a second, each credential
	pageBurst    = 200 // a read of 200 pages of cancels at once
	consumerRate = 5   // a second, each credential
	// consumerBurst is a workerd's pools at its start, each asking for its
	// consumers: at 20, a host of 100 pools took 16 s and hundreds of
	// refused requests to start them all. A request costs conductord a
	// consumer lookup per priority (and a create where one is missing),
	// a few hundred microseconds.
	consumerBurst = 256
)

var errTooMany = errors.New("too many requests from this credential; retry later")

// rates holds a limiter per credential id ("" for the hosts without one).
type rates = ratemap.PerKey

// slots bounds the requests being served: all at once, and of one
// credential, so that no host holds every slot.
type slots struct {
	all, each int

	mu     sync.Mutex
	busy   int
	byCred map[string]int
}

func (s *slots) take(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy >= s.all || s.byCred[id] >= s.each {
		return false
	}
	if s.byCred == nil {
		s.byCred = map[string]int{}
	}
	s.busy++
	s.byCred[id]++
	return true
}

func (s *slots) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy--
	if s.byCred[id]--; s.byCred[id] <= 0 {
		delete(s.byCred, id)
	}
}
