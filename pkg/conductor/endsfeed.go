package conductor

import (
	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/wire"
)

// feedEnds turns on (or off) the ends feed of a conductord that does not
// lead: the ends workerd announces, read as they pass (not taken from the
// ends stream, which is the leader's), wake the waits of this conductord's
// Client for the jobs they end. A wait woken reads the job's state, so
// ends forged or lost change nothing but when it reads: a lost one is
// caught by its recheck. The leader's ends taker wakes its waits itself.
func (c *Conductor) feedEnds(on bool) {
	c.endsFeedMu.Lock()
	defer c.endsFeedMu.Unlock()
	if !on || c.closing.Err() != nil {
		for _, sub := range c.endsFeed {
			_ = sub.Unsubscribe()
		}
		c.endsFeed = nil
		return
	}
	if c.endsFeed != nil {
		return
	}
	for _, subj := range []string{c.space.AllJobEnds(), c.space.AllEndsAs()} {
		sub, err := c.nc.Subscribe(subj, c.wakeFromEnds)
		if err != nil {
			c.log.Warn("follow the job ends for the waits; they read the states at their rechecks", "err", err)
			continue
		}
		c.endsFeed = append(c.endsFeed, sub)
	}
}

// wakeFromEnds wakes the waits of the jobs that m's ends end.
func (c *Conductor) wakeFromEnds(m *nats.Msg) {
	ends, err := wire.DecodeEnds(m.Data)
	if err != nil {
		return
	}
	for _, e := range ends.Jobs {
		if e.Status.Final() {
			c.client.JobEnded(e.ID)
		}
	}
}
