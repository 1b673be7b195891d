package client

import (
	"slices"
	"strings"
	"time"
)

// LostHostKept is how long a host lost (silent for three of its
// heartbeat intervals: its workerd killed, its machine down, or cut off)
// stays listed by LostHosts, unless it is heard again.
const LostHostKept = 15 * time.Minute

// maxLostHosts bounds the lost hosts kept, and maxLostBytes their
// heartbeats' bytes: past either, the longest lost are forgotten first.
const (
	maxLostHosts = 1000
	maxLostBytes = 16 << 20
)

// WorkerLost is the State of each worker of a lost host (LostHosts):
// what it was doing when the host was last heard is as it was then.
const WorkerLost = "lost"

// lostEntry is a lost host's last heartbeat, and when it was last heard.
type lostEntry struct {
	hb   Host
	seen time.Time
	size int
}

// LostHosts returns the hosts lost in the last LostHostKept, the most
// recently lost first: each as its last heartbeat described it, with
// Lost set to when it was last heard and each worker's State WorkerLost.
// A lost host heard again is live again, and no longer listed; one that
// stopped and said so (Host.Leaving) is never listed. Nil before the
// Client listens to heartbeats (see HeardHosts).
func (c *Client) LostHosts() []Host {
	c.hostsMu.Lock()
	r := c.hosts
	c.hostsMu.Unlock()
	if r == nil {
		return nil
	}
	return r.lostHosts()
}

// lostHosts is LostHosts of r.
func (r *hostRegistry) lostHosts() []Host {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.pruneLost(now)
	out := make([]Host, 0, len(r.lost))
	for _, e := range r.lost {
		h := e.hb
		h.Lost = e.seen
		h.Workers = slices.Clone(h.Workers)
		for i := range h.Workers {
			h.Workers[i].State = WorkerLost
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Host) int {
		if c := b.Lost.Compare(a.Lost); c != 0 {
			return c
		}
		return strings.Compare(a.Host, b.Host)
	})
	return out
}

// markLost keeps e, the entry of a host gone silent, among the lost.
// r.mu is held.
func (r *hostRegistry) markLost(id string, e hostEntry, now time.Time) {
	if r.lost == nil {
		r.lost = map[string]lostEntry{}
	}
	r.unlose(id)
	r.lost[id] = lostEntry{hb: e.hb, seen: e.seen, size: e.size}
	r.lostSize += e.size
	r.pruneLost(now)
}

// unlose forgets host id among the lost: it is heard again, or left.
// r.mu is held.
func (r *hostRegistry) unlose(id string) {
	if e, ok := r.lost[id]; ok {
		r.lostSize -= e.size
		delete(r.lost, id)
	}
}

// pruneLost forgets the lost hosts kept past LostHostKept, then the
// longest lost while over maxLostHosts or maxLostBytes. r.mu is held.
func (r *hostRegistry) pruneLost(now time.Time) {
	for id, e := range r.lost {
		if now.Sub(e.seen) > LostHostKept {
			r.unlose(id)
		}
	}
	for len(r.lost) > maxLostHosts || r.lostSize > maxLostBytes {
		oldest, at := "", time.Time{}
		for id, e := range r.lost {
			if oldest == "" || e.seen.Before(at) {
				oldest, at = id, e.seen
			}
		}
		r.unlose(oldest)
	}
}
