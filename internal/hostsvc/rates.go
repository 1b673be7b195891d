package hostsvc

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The rate of each credential's requests for consumers and cancel pages:
// a workerd asks for a pool's consumers at its start and reads the
// cancels at its start, after a reconnect and every FollowCheck; a host
// asking far more often is answered 429 at once, so that it holds up no
// other host's requests, which are answered in turn.
const (
	pageRate      = 20  // a second, each credential
	pageBurst     = 200 // a read of 200 pages of cancels at once
	consumerRate  = 5   // a second, each credential
	consumerBurst = 20  // a workerd's pools at its start
	maxLimiters   = 10_000
)

var errTooMany = errors.New("too many requests from this credential; retry later")

// rates holds a limiter per credential id ("" for the hosts without one).
type rates struct {
	every rate.Limit
	burst int

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func (r *rates) allow(id string) bool { return r.allowN(id, 1) }

// allowN takes n of credential id's rate, if it has them.
func (r *rates) allowN(id string, n int) bool { return r.limiter(id).AllowN(time.Now(), n) }

// limiter is credential id's.
func (r *rates) limiter(id string) *rate.Limiter {
	r.mu.Lock()
	l := r.m[id]
	if l == nil {
		if r.m == nil || len(r.m) >= maxLimiters {
			// Only credentials name themselves here (and admins): a full
			// map is forgotten rather than grown.
			r.m = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(r.every, r.burst)
		r.m[id] = l
	}
	r.mu.Unlock()
	return l
}

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
