package conductor

import (
	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/archive"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// feedEnds turns on the ends feed: the ends workerd announces, read as
// they pass (not taken from the ends stream, which is the leader's), wake
// the waits of this conductord's Client for the jobs they end, with the
// final states they carry where these are as good as the store's
// (feedState). With all, it wakes every wait: another conductord leads,
// and takes the ends. Without, it wakes them only while submissions wait
// (Conductor.submit): this conductord leads, and its ends taker wakes the
// waits too, but only once the ends are stored in their stream, delivered
// to it, archived and counted; a submission's answer need not wait for
// that. A wait woken without a state reads the job's, so ends forged or
// lost change nothing but when it reads: a lost one is caught by its
// recheck. Once conductord is closing, the feed is turned off.
func (c *Conductor) feedEnds(all bool) {
	c.endsFeedMu.Lock()
	defer c.endsFeedMu.Unlock()
	c.endsFeedAll.Store(all)
	if c.closing.Err() != nil {
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
	if !c.endsFeedAll.Load() && c.submitWaits.Load() == 0 {
		return // leading, with no submission waiting: the ends taker wakes the waits
	}
	cred, typ := c.space.ParseEnds(m.Subject)
	ends, err := wire.DecodeEnds(m.Data)
	if err != nil || typ == "" || ends.Type != typ {
		return
	}
	for _, e := range ends.Jobs {
		if e.Status.Final() {
			c.client.JobEndedWith(e.ID, c.feedState(cred, typ, e))
		}
	}
}

// feedState is the final state that end e, of type typ, announced on
// credential cred's subject ("": the hosts' own, JobEnds), tells a wait,
// or nil if the wait must read it: a state of the job and its type, and,
// from a host on a credential of its own, one this conductord's store
// wrote (hostEnd). The hosts that publish on JobEnds may write the state
// bucket itself: their states are as true as the store's.
func (c *Conductor) feedState(cred, typ string, e wire.End) []byte {
	if len(e.State) == 0 || len(e.State) > archive.MaxStateLen || subject.Token("job id", e.ID) != nil {
		return nil
	}
	if cred == "" {
		if stateOf(e.State, e.ID, typ) {
			return e.State
		}
		return nil
	}
	if c.hostsvc == nil {
		return nil
	}
	if _, ok := c.hostsvc.Ended(typ, e.ID, e.State); ok {
		return e.State
	}
	return nil
}
