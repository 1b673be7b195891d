package conductor

import (
	"context"
	"fmt"
	"sync"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/hostsvc"
)

// jobTypes is the set of job types conductord queues jobs of, bounded:
// each type costs the job stream a subject's state and the stats bucket a
// key, for good, so that a submitter free to name any type could grow
// them without end. A job of a new type past the bound is refused (400).
// The set is made at start from the types the stream holds jobs of and
// the hosts' consumers serve: a restart forgets the types of neither.
type jobTypes struct {
	mu  sync.Mutex
	set map[string]struct{}
	max int
}

// loadJobTypes reads the types the job stream holds jobs of and those
// its consumers serve.
func (c *Conductor) loadJobTypes(ctx context.Context) (*jobTypes, error) {
	t := &jobTypes{set: map[string]struct{}{}, max: c.cfg.MaxJobTypes}
	stream, info, err := c.jobStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	for subj := range info.State.Subjects {
		if typ, _ := c.space.ParseJob(subj); typ != "" {
			t.set[typ] = struct{}{}
		}
	}
	names := stream.ConsumerNames(ctx)
	for name := range names.Name() {
		if typ, _ := c.space.ParseConsumer(name); typ != "" {
			t.set[typ] = struct{}{}
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("conductor: list the job stream's consumers: %w", err)
	}
	return t, nil
}

// admit adds typ to the set, or says why it cannot.
func (t *jobTypes) admit(typ string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.roomLocked(typ); err != nil {
		return err
	}
	t.set[typ] = struct{}{}
	return nil
}

// room says why typ could not be added, nil if it could.
func (t *jobTypes) room(typ string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.roomLocked(typ)
}

func (t *jobTypes) roomLocked(typ string) error {
	if _, ok := t.set[typ]; ok || len(t.set) < t.max {
		return nil
	}
	return fmt.Errorf("job type %q is new, and conductord has %d job types, its most (--max-job-types)", typ, t.max)
}

// admitHost lets credential id have the consumers of job type typ
// (internal/hostsvc): a host credential of that type, if this
// conductord's credentials hold it (another namespace's are in the file
// of the conductord that embeds the server, whose permissions let the
// host ask for its types' only), and a type known or within the bound.
// The type counts once its consumers are made (madeForHost).
func (c *Conductor) admitHost(id, typ string) error {
	if id != "" {
		if cr, ok := c.access.creds.Load().Get(id); ok && (cr.Role != auth.Host || !cr.AllowsType(typ)) {
			return fmt.Errorf("%w: credential %s takes no jobs of type %s", hostsvc.ErrForbidden, id, typ)
		}
	}
	if err := c.types.room(typ); err != nil {
		return fmt.Errorf("%w; no consumer was made", err)
	}
	return nil
}

// madeForHost counts job type typ, whose consumers a host asked for.
func (c *Conductor) madeForHost(typ string) {
	if err := c.types.admit(typ); err != nil {
		c.log.Warn("a host's job type past the bound", "type", typ, "err", err)
	}
}
