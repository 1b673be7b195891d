package conductor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// MaxPayloadLimit bounds Config.MaxPayload: each payload being submitted
// is held whole in conductord's memory, and in a worker's.
const MaxPayloadLimit = 256 << 20

// inlinePayload is the largest payload a job's message carries: the
// configured one, within the NATS server's max_payload.
func (c *Conductor) inlinePayload() int {
	return min(c.cfg.InlinePayload, client.InlineLimit(c.nc))
}

// ensurePayloadBucket makes sure the payload bucket exists: an object
// store, replicated as the job stream is, read from its leader when
// replicated (readFromLeader): a worker reads a payload right after it was
// written.
func (c *Conductor) ensurePayloadBucket(ctx context.Context, storage jetstream.StorageType) error {
	cfg := jetstream.ObjectStoreConfig{
		Bucket:      c.space.PayloadBucket(),
		Description: "conductor job payloads too large for their messages, by object",
		Storage:     storage,
		Replicas:    c.replicas,
	}
	if s, err := c.js.Stream(ctx, payloads.StreamName(cfg.Bucket)); err == nil {
		if got := s.CachedInfo().Config; got.Replicas == c.replicas && got.Storage == storage && (!got.AllowDirect || c.replicas == 1) {
			// As made before: no update, which on a cluster just started
			// waits on its replicas' catching up.
			return nil
		}
	}
	if err := c.clusterCall(ctx, func(ctx context.Context) error {
		return placeAgain(ctx, func() error {
			_, err := c.js.CreateOrUpdateObjectStore(ctx, cfg)
			return err
		})
	}); err != nil {
		return c.placeErr("payload bucket", err)
	}
	if c.replicas > 1 {
		return c.readFromLeader(ctx, payloads.StreamName(cfg.Bucket), "payload bucket")
	}
	return nil
}

// payloadEnd is the end of a job whose payload was passed by reference.
type payloadEnd struct {
	id, object string
}

// payloadReaper removes the objects of payloads whose jobs have ended
// for good: succeeded, or cancelled. The ends taker hands it the ends
// that name one (wire.End.Payload); it removes an object only once the
// job's stored state says it has so ended and names that object, for an
// end is a host's word. A dead job keeps its object: it may be queued
// again. Its goroutine owns the removals; an end that finds its queue
// full is logged and its object left (docs/protocol.md, "Large
// payloads").
type payloadReaper struct {
	*startstop.Func
	c      *Conductor
	bucket *payloads.Bucket
	ends   chan payloadEnd
	log    *slog.Logger
	// onRemoved, if set, is called with each object removed or left: a
	// test signal, nil in production.
	onRemoved func(object string, removed bool)
}

// payloadReaperQueue bounds the ends waiting for their objects' removal.
const payloadReaperQueue = 4096

func newPayloadReaper(c *Conductor) *payloadReaper {
	r := &payloadReaper{c: c, bucket: payloads.NewBucket(c.js, c.space.PayloadBucket()), ends: make(chan payloadEnd, payloadReaperQueue), log: c.log.With("component", "payloads"), onRemoved: c.onPayloadRemoved}
	r.Func = startstop.NewFunc(r.run)
	return r
}

// ended takes the ends of ends that name a payload's object.
func (r *payloadReaper) ended(ends wire.Ends) {
	for _, e := range ends.Jobs {
		if e.Payload == "" || (e.Status != wire.StatusSucceeded && e.Status != wire.StatusCancelled) {
			continue
		}
		select {
		case r.ends <- payloadEnd{id: e.ID, object: e.Payload}:
		default:
			r.log.Warn("too many payload objects waiting for removal: this one is left in the payload bucket", "job", e.ID, "object", e.Payload)
		}
	}
}

// Every payloadSweepEvery while this conductord leads, the reaper also
// sweeps the whole bucket: an object older than payloadSweepAge whose job
// has ended for good is removed, whether its end was missed (conductord
// down, the queue full, a removal that failed) or never named it.
const (
	payloadSweepEvery = 10 * time.Minute
	payloadSweepAge   = 10 * time.Minute
)

func (r *payloadReaper) run(ctx context.Context) {
	sweep := time.NewTicker(payloadSweepEvery)
	defer sweep.Stop()
	for {
		var e payloadEnd
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
			if r.c.lead.leading() {
				r.sweep(ctx, time.Now().Add(-payloadSweepAge))
			}
			continue
		case e = <-r.ends:
		}
		err := r.remove(ctx, e)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("remove the payload object of a job that ended", "job", e.id, "object", e.object, "err", err)
		}
		r.removed(e.object, err == nil)
	}
}

// sweep removes the bucket's objects stored before before whose jobs have
// ended for good, and returns how many it removed.
func (r *payloadReaper) sweep(ctx context.Context, before time.Time) int {
	ctx, cancel := context.WithTimeout(ctx, payloadSweepEvery/2)
	defer cancel()
	obs, err := r.c.js.ObjectStore(ctx, r.bucket.Name())
	var objects []*jetstream.ObjectInfo
	if err == nil {
		objects, err = obs.List(ctx)
	}
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		r.log.Warn("sweep the payload bucket", "err", err)
		return 0
	}
	removed := 0
	for _, info := range objects {
		i := strings.LastIndexByte(info.Name, '.')
		if i <= 0 || info.ModTime.After(before) || ctx.Err() != nil {
			continue
		}
		// A job that has not ended, or is dead, keeps its object: remove
		// says why, and that is no news.
		if r.remove(ctx, payloadEnd{id: info.Name[:i], object: info.Name}) == nil {
			removed++
			r.removed(info.Name, true)
		}
	}
	if removed > 0 {
		r.log.Info("removed the payload objects of jobs that ended, which their ends had not", "objects", removed, "kept", len(objects)-removed)
	}
	return removed
}

func (r *payloadReaper) removed(object string, ok bool) {
	if r.onRemoved != nil {
		r.onRemoved(object, ok)
	}
}

// remove removes e's object if the job's state says it has ended for
// good, with that object.
func (r *payloadReaper) remove(ctx context.Context, e payloadEnd) error {
	if !strings.HasPrefix(e.object, e.id+".") {
		// Objects are named for their jobs (payloads.Put): one named
		// otherwise is a direct publisher's own, to remove itself.
		return fmt.Errorf("object %s is not named for job %s: kept", e.object, e.id)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	j, err := r.c.client.Job(ctx, e.id)
	if err != nil {
		return fmt.Errorf("read the job's state: %w", err)
	}
	switch {
	case j.Status != client.StatusSucceeded && j.Status != client.StatusCancelled:
		return fmt.Errorf("the job is %s, not ended for good: its object is kept", j.Status)
	case j.PayloadRef != nil && j.PayloadRef.Object != e.object:
		return fmt.Errorf("the job's state names object %s: the end's is kept", j.PayloadRef.Object)
	}
	// A state with no reference is that of a job that never ran
	// (cancelled while queued): its end names the object its message did.
	return payloads.Delete(ctx, r.bucket, e.object)
}

// largeBodyBudget bounds the bytes of the large payloads (over the inline
// limit) that HTTP submissions hold at once: past it, one is refused 503
// with Retry-After, read no further. A body takes its share as its bytes
// arrive, a step at a time, and gives it back once its job is queued (or
// refused): a body that trickles in holds what it sent, for at most the
// read deadline, and a job that runs holds none.
const (
	largeBodyBudget = 512 << 20
	largeBodyStep   = 1 << 20
)

// errBodyBudget is a body refused for the large bodies' budget.
var errBodyBudget = errors.New("too many large payloads are being submitted at once")

// bodyBudget counts the bytes of the large payloads being submitted.
type bodyBudget struct {
	mu   sync.Mutex
	held int64
}

// take takes n bytes of the budget, if it has them.
func (b *bodyBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held+n > largeBodyBudget {
		return false
	}
	b.held += n
	return true
}

func (b *bodyBudget) give(n int64) {
	b.mu.Lock()
	b.held -= n
	b.mu.Unlock()
}

// reader returns r, read within the budget past its first free bytes.
func (b *bodyBudget) reader(r io.Reader, free int) *budgetReader {
	return &budgetReader{r: r, b: b, free: int64(free)}
}

// budgetReader reads a body, taking the budget's room for what it has
// read past free, largeBodyStep at a time; reads fail with errBodyBudget
// once the budget has none. release gives it back, once or more.
type budgetReader struct {
	r    io.Reader
	b    *bodyBudget
	free int64
	read int64

	mu   sync.Mutex // release may come from submit's goroutine, or the handler's defer
	held int64
}

func (br *budgetReader) Read(p []byte) (int, error) {
	n, err := br.r.Read(p)
	br.read += int64(n)
	br.mu.Lock()
	defer br.mu.Unlock()
	for br.read > br.free+br.held {
		if !br.b.take(largeBodyStep) {
			return n, errBodyBudget
		}
		br.held += largeBodyStep
	}
	return n, err
}

func (br *budgetReader) release() {
	br.mu.Lock()
	defer br.mu.Unlock()
	br.b.give(br.held)
	br.held = 0
}
