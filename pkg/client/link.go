package client

import "github.com/conductor-run/conductor/internal/clientlink"

// init gives pkg/conductor, which runs a Client of its own, what it needs
// of it beyond the API (see internal/clientlink).
func init() {
	clientlink.Of = func(v any) clientlink.Link {
		c := v.(*Client)
		return clientlink.Link{
			Conn:            c.nc,
			Space:           c.space,
			RecheckInterval: c.cfg.RecheckInterval,
			Feed:            c.feed,
			JobEnded:        c.jobEnded,
			ListenHosts: func() error {
				_, err := c.hostRegistry()
				return err
			},
			LiveHosts: func() any {
				c.hostsMu.Lock()
				r := c.hosts
				c.hostsMu.Unlock()
				if r == nil {
					return []Host(nil)
				}
				return r.live()
			},
			Waits: func(id string) int {
				c.mu.Lock()
				defer c.mu.Unlock()
				return len(c.waiters[id])
			},
			FollowsJobEvents: func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.sub != nil
			},
		}
	}
	for _, op := range poolOps {
		clientlink.PoolOps = append(clientlink.PoolOps, string(op))
	}
	clientlink.CheckFields = func(op string, set []string) error { return checkFields(PoolOp(op), set) }
}
