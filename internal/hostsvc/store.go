package hostsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// The store: a host with a credential of its own writes its jobs' states
// and dead entries through conductord, which checks each against the job
// type its subject names (the host's account imports its own types'
// only): the state written is of that type and names its key, and the
// state it replaces (the one at the revision it expects) was of that type
// too; a dead entry is of that type, and so is the job's state. conductord
// writes with headers of its own, so that no host can roll a bucket up
// or set any other header; the compare-and-set of the revision is the
// store's, as when a host wrote itself.

// The store's requests are served by storeWorkers workers, in turn by
// credential (queue.go); storePending requests and storePendingBytes wait
// at most, past which the server drops requests for the subscription (a
// slow consumer), and their hosts, unanswered, write those states again.
const (
	storeWorkers      = 8
	storePending      = 1024
	storePendingBytes = 64 << 20
)

// A credential writes at most itemRate items a second (a burst of
// itemBurst): far past what one host's pools end, so that a host
// flooding the store is answered 429 at once, cheaply, and every other
// host's requests, served in turn, still come through. A request reads
// the stream at most maxReads times (a state replaced that conductord did
// not write, a job's message); past them its items are refused.
const (
	itemRate  = 50_000
	itemBurst = 50_000
	// bytes a second, each credential: a burst holds the largest request
	// twice (the server's largest message, 8 MiB).
	byteRate  = 64 << 20
	byteBurst = 16 << 20
	maxReads  = 512
	readRate  = 20_000 // a second, each credential
)

// storeWait bounds a request's writes: half the host's wait for the
// answer (internal/agent's storeTimeout, 10s), so that the answer, even
// of writes the store was slow to take, comes while the host still waits
// for it rather than after it has given the burst up.
const storeWait = 5 * time.Second

// revTypes remembers the job type of the states conductord wrote for
// hosts, by revision, so that the next write of the same job needs no
// read of the state it replaces. It forgets everything when full.
type revTypes struct {
	mu  sync.Mutex
	m   map[uint64]revType
	max int
}

// revType is what the store knows of a state it wrote: its job, type and
// whether it is final.
type revType struct {
	key, typ string
	final    bool
}

const maxRevTypes = 1 << 18

func (r *revTypes) get(rev uint64) (revType, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.m[rev]
	return t, ok
}

// moved records that the state at rev is now at next.
func (r *revTypes) moved(rev, next uint64, t revType) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil || len(r.m) >= r.max {
		r.m = make(map[uint64]revType, 1024)
	}
	delete(r.m, rev)
	r.m[next] = t
}

// storer is the Server's store: its handles on the buckets.
type storer struct {
	js     jetstream.JetStream
	nc     *nats.Conn // js's
	sp     subject.Space
	states jetstream.KeyValue
	stream jetstream.Stream // the state bucket's
	dead   jetstream.KeyValue
	jobs   jetstream.Stream // the job stream: a job's message shows its type
	known  revTypes
	finals *finals // the final states written, for the ends (ends.go)
	// archive is Config.Archive; log, Config.Log.
	archive func([]FinalState) error
	log     *slog.Logger
	items   rates // each credential's items a second
	bytes   rates // each credential's bytes a second
	reads   rates // each credential's reads of the stream a second
}

func (s *Server) openStore(ctx context.Context) error {
	// A JetStream context of the store's own: its writes in flight are
	// the workers' requests' (storeWorkers of wire.MaxStoreItems at
	// most), not held up by conductord's other async publishes.
	nc := s.cfg.StoreConn
	if nc == nil {
		nc = s.cfg.Conn
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(storeWorkers*wire.MaxStoreItems))
	if err != nil {
		return fmt.Errorf("hostsvc: %w", err)
	}
	st := &storer{js: js, nc: nc, sp: s.cfg.Space, known: revTypes{max: maxRevTypes}, finals: newFinals(), items: rates{Every: itemRate, Burst: itemBurst},
		bytes: rates{Every: byteRate, Burst: byteBurst}, archive: s.cfg.Archive, log: s.cfg.Log,
		reads: rates{Every: readRate, Burst: readRate}}
	if st.jobs, err = st.js.Stream(ctx, st.sp.JobStream()); err != nil {
		return fmt.Errorf("hostsvc: the job stream: %w", err)
	}
	if st.states, err = st.js.KeyValue(ctx, st.sp.StateBucket()); err != nil {
		return fmt.Errorf("hostsvc: the state bucket: %w", err)
	}
	if st.stream, err = st.js.Stream(ctx, subject.KVStream(st.sp.StateBucket())); err != nil {
		return fmt.Errorf("hostsvc: the state bucket: %w", err)
	}
	if st.dead, err = st.js.KeyValue(ctx, st.sp.DeadBucket()); err != nil {
		return fmt.Errorf("hostsvc: the dead bucket: %w", err)
	}
	s.store = st
	return nil
}

// storeReq serves m, a store request of credential id (fairQueue).
func (s *Server) storeReq(id string, m *nats.Msg) {
	typ, ok := s.requestType(m)
	if !ok {
		return
	}
	items, err := wire.ParseStoreBatch(m.Data)
	if err != nil {
		s.answer(m, http.StatusBadRequest, errorBody(err))
		return
	}
	if !s.store.items.AllowN(id, len(items)) {
		s.answer(m, http.StatusTooManyRequests, errorBody(errTooMany))
		return
	}
	if !s.enter() {
		return // stopping: unanswered, the host writes again
	}
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	defer cancel()
	results := s.store.write(ctx, id, typ, items)
	refused, first := 0, -1
	for i, r := range results {
		if r.Error != "" && !r.Conflict {
			if refused++; first < 0 {
				first = i
			}
		}
	}
	if refused > 0 && s.refusals.Allow(id) {
		// One line a request, at most a few a second a credential.
		s.cfg.Log.Warn("a host's writes refused", "credential", id, "type", typ, "refused", refused, "of", len(items),
			"first_job", items[first].Key, "first_err", results[first].Error)
	}
	s.answer(m, http.StatusOK, results)
}

// write makes the writes of items, of job type typ, for credential id,
// and returns their outcomes in order.
func (st *storer) write(ctx context.Context, id, typ string, items []wire.StoreItem) []wire.StoreResult {
	results := make([]wire.StoreResult, len(items))
	futures := make([]jetstream.PubAckFuture, len(items))
	reads := &readBudget{left: maxReads, rate: st.reads.Limiter(id), bytes: st.bytes.Limiter(id)}
	// The checks first, their reads (each a round trip) at once, up to
	// checkParallel; then the writes, in order.
	checks := make([]error, len(items))
	heads := make([]head, len(items))
	proved := st.prove(ctx, typ, items, reads)
	var wg sync.WaitGroup
	sem := make(chan struct{}, checkParallel)
	for i, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			heads[i], checks[i] = st.check(ctx, typ, it, reads, proved)
		})
	}
	wg.Wait()
	for i, it := range items {
		if err := checks[i]; err != nil {
			results[i] = failed(err)
			continue
		}
		switch it.Op {
		case wire.StoreState, wire.StoreCreate:
			// A create is a write that expects no state: if the key has a
			// deleted one, it is written again below past it.
			m := nats.NewMsg(subject.KV(st.sp.StateBucket(), it.Key))
			m.Data = it.Data
			m.Header.Set(names.HeaderExpectedLastSubjectSeq, strconv.FormatUint(it.Rev, 10))
			if it.TTL > 0 {
				m.Header.Set(names.HeaderTTL, it.TTL.String())
			}
			f, err := st.js.PublishMsgAsync(m)
			if err != nil {
				results[i] = failed(err)
				continue
			}
			futures[i] = f
		case wire.StoreDead:
			rev, err := st.dead.Put(ctx, it.Key, it.Data)
			if err != nil {
				results[i] = failed(err)
				continue
			}
			results[i].Rev = rev
		}
	}
	var ended []FinalState
	for i, f := range futures {
		if f == nil {
			continue
		}
		it := items[i]
		select {
		case ack := <-f.Ok():
			results[i].Rev = ack.Sequence
		case err := <-f.Err():
			if it.Op == wire.StoreCreate && isWrongLast(err) {
				results[i] = st.create(ctx, it)
				break
			}
			results[i] = failed(err)
		case <-ctx.Done():
			results[i] = failed(fmt.Errorf("no answer from the store within %v", storeWait))
		}
		if results[i].Rev != 0 {
			final := wire.Status(heads[i].Status).Final()
			st.known.moved(it.Rev, results[i].Rev, revType{key: it.Key, typ: typ, final: final})
			if final {
				ended = append(ended, FinalState{ID: it.Key, State: it.Data, typ: typ, status: wire.Status(heads[i].Status)})
			}
		}
	}
	st.ended(ended)
	return results
}

// ended archives the final states written, ended, and remembers them,
// for the ends that will carry them (ends.go). Archived here, a state is
// kept whenever its end comes, or if it never does; one the archive
// refused is archived from its end.
func (st *storer) ended(ended []FinalState) {
	if len(ended) == 0 {
		return
	}
	archived := false
	if st.archive != nil {
		if err := st.archive(ended); err != nil {
			st.log.Warn("archive the final states a host stored; archived from its ends instead", "states", len(ended), "err", err)
		} else {
			archived = true
		}
	}
	for _, f := range ended {
		st.finals.put(f.ID, f.typ, f.status, f.State, archived)
	}
}

// create writes it past the key's deleted state, as KeyValue.Create does.
func (st *storer) create(ctx context.Context, it wire.StoreItem) wire.StoreResult {
	var opts []jetstream.KVCreateOpt
	if it.TTL > 0 {
		opts = append(opts, jetstream.KeyTTL(it.TTL))
	}
	rev, err := st.states.Create(ctx, it.Key, it.Data, opts...)
	if err != nil {
		return failed(err)
	}
	return wire.StoreResult{Rev: rev}
}

func failed(err error) wire.StoreResult {
	return wire.StoreResult{Error: err.Error(), Conflict: errors.Is(err, errGone) || isWrongLast(err)}
}

// The JetStream error codes of a wrong last sequence per subject, and of
// a key that exists (KeyValue.Create's).
const (
	jsErrWrongLast         = 10071
	jsErrWrongLastConstant = 10164
)

func isWrongLast(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jsErrWrongLast || apiErr.ErrorCode == jsErrWrongLastConstant)
}
