package lookup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FeedBeat is how often Feed tells the last revision when nothing
// changes, so that a Cache that missed a change finds out.
const FeedBeat = time.Second

// feedMsg is one message of the change feed: a change (Rev and Key, the
// bucket's key of the lookup's key, as keyOf makes it) or a beat (Last).
type feedMsg struct {
	Rev  uint64 `json:"rev,omitempty"`
	Key  string `json:"key,omitempty"`
	Last uint64 `json:"last,omitempty"`
}

// Feed publishes, on subj, each change of the store's lookups as it is
// stored, and every beat (FeedBeat if 0) the last revision, until ctx
// ends (nil) or the bucket cannot be followed (an error). A change is
// numbered by its revision, and the revisions of the bucket follow one
// another: a Cache that sees a number skipped, in a change or a beat,
// knows it missed one. Only the one that serves the lookups should
// publish on subj.
//
// local, if not nil, is a cache of the store (Store.NewCache) that Feed
// tells each change before it publishes it: a reader told of a change by
// the feed and asking local after reads the change or a later one.
func (s *Store) Feed(ctx context.Context, nc *nats.Conn, subj string, beat time.Duration, local *Cache) error {
	if beat <= 0 {
		beat = FeedBeat
	}
	st, err := s.kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("lookup: feed: %w", err)
	}
	var last uint64
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		last = bs.StreamInfo().State.LastSeq
	}
	// Every change past the status, from the first: one stored before
	// the watch began is published all the same.
	w, err := s.kv.WatchAll(ctx, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(last+1), jetstream.MetaOnly())
	if err != nil {
		return fmt.Errorf("lookup: feed: %w", err)
	}
	defer func() { _ = w.Stop() }()
	t := time.NewTicker(beat)
	defer t.Stop()
	send := func(m feedMsg) {
		if local != nil {
			local.observe(m)
		}
		b, _ := json.Marshal(m)
		// A publish fails only on a closed connection; the next beat
		// tells what was missed.
		_ = nc.Publish(subj, b)
	}
	send(feedMsg{Last: last})
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("lookup: feed: the watch of the bucket ended")
			}
			if e == nil {
				continue
			}
			last = e.Revision()
			send(feedMsg{Rev: last, Key: e.Key()})
		case <-t.C:
			send(feedMsg{Last: last})
		}
	}
}
