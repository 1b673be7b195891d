// Package ratemap holds a rate limiter per caller (a credential id, a host
// id): what conductord's services give each caller of theirs, so that one
// asking too often is refused at once and the others are served.
package ratemap

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// MaxKeys bounds the callers a PerKey keeps limiters of: past it, it
// forgets them all rather than grow (only callers the server names, by
// their credential, reach a PerKey).
const MaxKeys = 10_000

// PerKey holds a limiter per key, each at Every a second with a burst of
// Burst. The zero value with Every and Burst set is ready to use; it is
// safe for concurrent use.
type PerKey struct {
	Every rate.Limit
	Burst int

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// Allow takes one of key's rate, if it has it.
func (r *PerKey) Allow(key string) bool { return r.AllowN(key, 1) }

// AllowN takes n of key's rate, if it has them.
func (r *PerKey) AllowN(key string, n int) bool { return r.Limiter(key).AllowN(time.Now(), n) }

// Limiter is key's limiter.
func (r *PerKey) Limiter(key string) *rate.Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.m[key]
	if l == nil {
		if r.m == nil || len(r.m) >= MaxKeys {
			r.m = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(r.Every, r.Burst)
		r.m[key] = l
	}
	return l
}
