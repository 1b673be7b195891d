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
	"golang.org/x/time/rate"

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
	st := &storer{js: js, nc: nc, sp: s.cfg.Space, known: revTypes{max: maxRevTypes}, finals: newFinals(), items: rates{every: itemRate, burst: itemBurst},
		bytes: rates{every: byteRate, burst: byteBurst}, archive: s.cfg.Archive, log: s.cfg.Log,
		reads: rates{every: readRate, burst: readRate}}
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
	if !s.store.items.allowN(id, len(items)) {
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
	if refused > 0 && s.refusals.allow(id) {
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
	reads := &readBudget{left: maxReads, rate: st.reads.limiter(id), bytes: st.bytes.limiter(id)}
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

// check makes sure it is a write of a job of type typ; a conflict if the
// state it expects is gone.
func (st *storer) check(ctx context.Context, typ string, it wire.StoreItem, reads *readBudget, proved *proofs) (head, error) {
	if err := subject.Token("job id", it.Key); err != nil {
		return head{}, err
	}
	state, err := readHead(it.Data)
	if err != nil {
		return state, err
	}
	if state.ID != it.Key || state.Type != typ {
		return state, fmt.Errorf("the state of job %q of type %q, written as job %q of type %q: refused", state.ID, state.Type, it.Key, typ)
	}
	switch {
	case it.Op == wire.StoreDead:
		if st.finals.deadOf(it.Key, typ) {
			return state, nil // its dead state, written through the store
		}
		// Else (written before conductord last started) read, a few a
		// request: the key's state may be another type's, of any size.
		if err := readDead(reads); err != nil {
			return state, err
		}
		if err := read(reads); err != nil {
			return state, err
		}
		cur, err := st.states.Get(ctx, it.Key)
		if err != nil {
			return state, fmt.Errorf("job %s has no state to index as dead: %w", it.Key, err)
		}
		if err := readBytes(reads, len(cur.Value())); err != nil {
			return state, err
		}
		if was, err := readHead(cur.Value()); err != nil || was.Type != typ || was.Status != string(wire.StatusDead) {
			return state, fmt.Errorf("job %s is not a dead job of type %s: refused", it.Key, typ)
		}
	case it.Rev != 0:
		return state, st.checkReplaced(ctx, typ, it, reads)
	default:
		return state, st.checkJob(ctx, typ, it, reads, proved)
	}
	return state, nil
}

// readBudget is what a request may read of the stream: at most maxReads,
// within its credential's rate, and the bytes it reads within its
// credential's rate of bytes. Its checks run at once.
type readBudget struct {
	mu    sync.Mutex
	left  int
	rate  *rate.Limiter
	bytes *rate.Limiter
	deads int // states of dead entries read
}

// maxDeadReads bounds the states a request's dead entries read: those
// the store did not write since conductord started.
const maxDeadReads = 4

// readDead takes one of a request's reads of a dead entry's state.
func readDead(b *readBudget) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.deads >= maxDeadReads {
		return fmt.Errorf("more than %d dead entries of jobs whose dead state this conductord did not write, in one request: refused; send fewer at once", maxDeadReads)
	}
	b.deads++
	return nil
}

// readBytes counts n bytes read of the stream in b's credential's rate of
// bytes: past it, the request's next checks are refused. The bytes are
// read by then; the rate bounds what a host makes conductord read for
// states it may not write (another type's, as large as the server takes).
func readBytes(b *readBudget, n int) error {
	if b.bytes == nil || b.bytes.AllowN(time.Now(), n) {
		return nil
	}
	b.mu.Lock()
	b.left = 0
	b.mu.Unlock()
	return fmt.Errorf("more than %d bytes a second written and read for this credential: refused; retry later", byteRate)
}

// checkParallel bounds a request's checks run at once.
const checkParallel = 32

// read takes one of a request's reads, or says why it may not.
func read(b *readBudget) error { return readN(b, 1) }

// readN takes n of a request's reads, or says why it may not.
func readN(b *readBudget, n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.left < n {
		return fmt.Errorf("more than %d reads of the stream in one request: refused; send fewer writes at once", maxReads)
	}
	if !b.rate.AllowN(time.Now(), n) {
		return fmt.Errorf("more than %d reads of the stream a second for this credential: refused; retry later", readRate)
	}
	b.left -= n
	return nil
}

// checkJob makes sure that a write finding no state of job it.Key (a
// first state, one past a deleted or expired one) is of a job of type
// typ: the job's message, at it.Seq, is on typ's subjects and names the
// job. Without it, a host could take the id of another type's job that
// has no state (yet, or any more): an idempotent id (anyone can compute
// it), or one whose final state went to the archive.
func (st *storer) checkJob(ctx context.Context, typ string, it wire.StoreItem, reads *readBudget, proved *proofs) error {
	if it.Seq == 0 {
		return fmt.Errorf("a first state of job %s names no job message: refused", it.Key)
	}
	if ref, found := proved.has(it.Seq); found {
		if ref.id != it.Key {
			return fmt.Errorf("job message %d is not job %s of type %s: refused", it.Seq, it.Key, typ)
		}
		return nil
	}
	// Read by the subjects of typ only, normal then high and low: a
	// message of another type is never read (its payload, up to the
	// server's largest, would be read for nothing).
	for _, subj := range []string{st.sp.Job(typ), st.sp.Job(typ) + ".*"} {
		if err := read(reads); err != nil {
			return err
		}
		m, err := st.jobs.GetMsg(ctx, it.Seq, jetstream.WithGetMsgSubject(subj))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return fmt.Errorf("read the job's message: %w", err)
		case m.Sequence != it.Seq:
			continue // the next of typ past it: the one at it.Seq is not
		case wire.MessageJobID(m.Header, it.Seq) != it.Key:
			return fmt.Errorf("job message %d is not job %s of type %s: refused", it.Seq, it.Key, typ)
		}
		return nil
	}
	return fmt.Errorf("job message %d is not a job of type %s, or is gone: a first state of job %s refused", it.Seq, typ, it.Key)
}

// errGone is the error of a write whose expected state is gone: the key
// has moved on, so the write would fail as a conflict anyway.
var errGone = errors.New("the state at the revision expected is gone")

// checkReplaced makes sure the state at it.Rev is job it.Key's, of type
// typ (or a deleted one), and, if it is final, that it.Data ends the job
// alike (the same status, result and error): a final state is never
// replaced by another end; a host records a superseded attempt in its
// history only (docs/reliability.md).
func (st *storer) checkReplaced(ctx context.Context, typ string, it wire.StoreItem, reads *readBudget) error {
	if t, ok := st.known.get(it.Rev); ok {
		if t.key != it.Key || t.typ != typ {
			return fmt.Errorf("revision %d is not a state of job %s of type %s: refused", it.Rev, it.Key, typ)
		}
		if !t.final {
			return nil
		}
	}
	if err := read(reads); err != nil {
		return err
	}
	// Read by the key's subject: a revision of another key (whose state,
	// of any size, would be read for nothing) finds the key's next one,
	// or none.
	m, err := st.stream.GetMsg(ctx, it.Rev, jetstream.WithGetMsgSubject(subject.KV(st.sp.StateBucket(), it.Key)))
	if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && m.Sequence != it.Rev {
		// Not the key's state at that revision, or gone: the key is not
		// at it, and the write would fail as a conflict.
		return errGone
	}
	if err != nil {
		return fmt.Errorf("read the state replaced: %w", err)
	}
	if err := readBytes(reads, len(m.Data)); err != nil {
		return err
	}
	if len(m.Data) == 0 {
		// A deleted state, or a marker: as if there were none.
		return st.checkJob(ctx, typ, it, reads, nil)
	}
	was, err := readHead(m.Data)
	if err != nil || was.Type != typ {
		return fmt.Errorf("revision %d is a state of job %s of another type: refused", it.Rev, it.Key)
	}
	if wire.Status(was.Status).Final() && !sameEnd(m.Data, it.Data) {
		return fmt.Errorf("job %s has ended (%s): a state that ends it otherwise refused", it.Key, was.Status)
	}
	return nil
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
