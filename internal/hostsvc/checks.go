package hostsvc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// The store's checks of a host's writes (store.go): each within the reads
// its request may make.

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
	// messages are the job messages read, by sequence.
	messages map[uint64]*messageRead
}

// message returns the read of the job message at seq, made or to make.
func (b *readBudget) message(seq uint64) *messageRead {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.messages == nil {
		b.messages = map[uint64]*messageRead{}
	}
	r := b.messages[seq]
	if r == nil {
		r = &messageRead{}
		b.messages[seq] = r
	}
	return r
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
	if id, found := proved.has(it.Seq); found {
		if id != it.Key {
			return fmt.Errorf("job message %d is not job %s of type %s: refused", it.Seq, it.Key, typ)
		}
		return nil
	}
	// Each message once a request, however many of its items name it.
	r := reads.message(it.Seq)
	r.once.Do(func() { r.id, r.found, r.err = st.readJob(ctx, typ, it.Seq, reads) })
	switch {
	case r.err != nil:
		return r.err
	case !r.found:
		return fmt.Errorf("job message %d is not a job of type %s, or is gone: a first state of job %s refused", it.Seq, typ, it.Key)
	case r.id != it.Key:
		return fmt.Errorf("job message %d is not job %s of type %s: refused", it.Seq, it.Key, typ)
	}
	return nil
}

// readJob reads the job message at seq by the subjects of typ only,
// normal then high and low (a message of another type is never read: its
// payload, up to the server's largest, would be read for nothing), and
// returns the id of its job; found false if it is no message of typ.
func (st *storer) readJob(ctx context.Context, typ string, seq uint64, reads *readBudget) (id string, found bool, err error) {
	for _, subj := range []string{st.sp.Job(typ), st.sp.Job(typ) + ".*"} {
		if err := read(reads); err != nil {
			return "", false, err
		}
		m, err := st.jobs.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return "", false, fmt.Errorf("read the job's message: %w", err)
		case m.Sequence != seq:
			continue // the next of typ past it: the one at seq is not
		}
		return wire.MessageJobID(m.Header, seq), true, nil
	}
	return "", false, nil
}

// messageRead is a request's read of one job message (readJob), made
// once.
type messageRead struct {
	once  sync.Once
	id    string
	found bool
	err   error
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
