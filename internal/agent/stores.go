package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
)

// storeAnswers publishes job states to the store with a reply subject and
// matches the store's answers to them. It does for the source what nats.go's
// PublishAsync futures did, for less: one subscription and one slice, no
// timer or channel per state, and an answer that says the state is stored is
// recognised without decoding it (the decode alone was a tenth of workerd's
// CPU under load).
//
// The publisher sends the states of a burst of outcomes, then seals it (see
// publisher). The acker waits on one state at a time, in order, and only an
// answer to that state wakes it: answers that arrive together wake it once.
// An answer that never comes (a reconnect, a leader change) is given up
// storeTimeout after its burst was sealed, with the rest of the burst; the
// acker then writes those states again synchronously.
type storeAnswers struct {
	nc      *nats.Conn
	prefix  string // reply subjects are prefix + a number
	sub     *nats.Subscription
	timeout time.Duration // storeTimeout; tests shorten it

	// The header of the states sent, and its values: send's, from the
	// publisher's goroutine only.
	header  nats.Header
	revBuf  []byte
	ttl     time.Duration
	ttlText string

	mu sync.Mutex
	// open holds the states sent, by id: open[i] has id first+i, nil once
	// answered or given up. Ids are sent in order and mostly answered in
	// order, so the front empties as fast as the back fills: a map, with a
	// key added and one deleted per state, was 5% of workerd's CPU. A state
	// never answered keeps the ones after it here until its wait gives it
	// up: every state sent must be waited on.
	open  []*stateStore
	first uint64 // the id of open[0]; ids start at 1

	// A host with a credential of its own sends the states of a burst to
	// conductord, in requests of up to maxBatch bytes, each answered once
	// for all its states (internal/hostsvc). Nil proxy: each state is
	// published to the store.
	proxy    *hostsvc.Caller
	storeSub string // proxy's subject for the pool's type
	maxBatch int
	batch    []byte                   // the request being filled: the publisher's
	batched  []*stateStore            // its states: the publisher's
	reqs     map[uint64][]*stateStore // guarded by mu: the requests sent, not answered
	lastReq  uint64                   // guarded by mu
}

// proxyTo makes a send its states through svc's conductord, for the jobs
// of type typ.
func (a *storeAnswers) proxyTo(svc *hostsvc.Caller, typ string) {
	a.proxy, a.storeSub, a.reqs = svc, svc.StoreSubject(typ), map[uint64][]*stateStore{}
	a.maxBatch = max(int(a.nc.MaxPayload())/2, 64<<10)
}

// stateStore is one state sent to the store.
type stateStore struct {
	burst *storeBurst
	id    uint64
	// Guarded by storeAnswers.mu.
	answered bool  // the store answered, or the wait was given up
	err      error // why the state is not known to be stored
}

// storeBurst is the states of one burst of outcomes.
type storeBurst struct {
	deadline time.Time // when the states not answered yet are given up; set by seal
	// Guarded by storeAnswers.mu.
	stores  []*stateStore
	reqs    []uint64      // its requests to conductord, if proxied
	waitFor *stateStore   // the state the acker waits on, if any
	wake    chan struct{} // closed when waitFor has its outcome
}

// errNoAnswer is the error of a state whose store did not answer in time.
var errNoAnswer = errors.New("no answer from the store")

// errWrongLast is the error of a state not stored because the key's
// revision was not the one the write expected (see isConflict).
var errWrongLast = errors.New("the state changed since it was read")

// The JetStream error codes of a wrong last sequence per subject.
const (
	jsErrWrongLast         = 10071
	jsErrWrongLastConstant = 10164
)

func newStoreAnswers(nc *nats.Conn) (*storeAnswers, error) {
	inbox := nc.NewInbox()
	a := &storeAnswers{nc: nc, prefix: inbox + ".", timeout: storeTimeout, first: 1}
	sub, err := nc.Subscribe(inbox+".*", a.answer)
	if err != nil {
		return nil, fmt.Errorf("agent: subscribe to store answers: %w", err)
	}
	// The answers pending are bounded by the jobs held; never drop one.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("agent: subscribe to store answers: %w", err)
	}
	a.sub = sub
	return a, nil
}

// close stops taking answers. States still waiting are given up by their
// bursts' deadlines.
func (a *storeAnswers) close() {
	_ = a.sub.Unsubscribe()
}

// burst starts a burst; send its states, then seal it.
func (a *storeAnswers) burst() *storeBurst {
	return &storeBurst{}
}

// send publishes data on subj, a key of the store, as part of b, if the
// key's revision is still rev (0: if it has none); else the store answers
// with errWrongLast. ttl, if not 0, is the state's time to live; seq is
// the stream sequence of the job's message (wire.StoreItem.Seq). One
// goroutine sends (the publisher).
func (a *storeAnswers) send(b *storeBurst, subj string, data []byte, rev uint64, ttl time.Duration, seq uint64) *stateStore {
	a.mu.Lock()
	st := &stateStore{burst: b, id: a.first + uint64(len(a.open))}
	a.open = append(a.open, st)
	b.stores = append(b.stores, st)
	a.mu.Unlock()
	if a.proxy != nil {
		if len(a.batched) > 0 && (len(a.batch)+len(data)+256 > a.maxBatch || len(a.batched) == wire.MaxStoreItems) {
			a.flush(b)
		}
		key := subj[strings.LastIndexByte(subj, '.')+1:]
		a.batch = wire.AppendStoreItem(a.batch, wire.StoreItem{Op: wire.StoreState, Key: key, Rev: rev, TTL: ttl, Seq: seq, Data: data})
		a.batched = append(a.batched, st)
		return st
	}
	reply := a.prefix + strconv.FormatUint(st.id, 10)
	// The header is the sender's, reused: PublishMsg has written it out
	// when it returns.
	h := a.header
	if h == nil {
		h = nats.Header{}
		a.header = h
	}
	a.revBuf = strconv.AppendUint(a.revBuf[:0], rev, 10)
	h[names.HeaderExpectedLastSubjectSeq] = append(h[names.HeaderExpectedLastSubjectSeq][:0], string(a.revBuf))
	if ttl > 0 {
		if ttl != a.ttl {
			a.ttl, a.ttlText = ttl, ttl.String()
		}
		h[names.HeaderTTL] = append(h[names.HeaderTTL][:0], a.ttlText)
	} else {
		delete(h, names.HeaderTTL)
	}
	if err := a.nc.PublishMsg(&nats.Msg{Subject: subj, Reply: reply, Header: h, Data: data}); err != nil {
		a.settle(st, err)
	}
	return st
}

// seal ends b's sending and starts its deadline. b is waited on only
// after.
func (a *storeAnswers) seal(b *storeBurst) {
	if len(a.batched) > 0 {
		a.flush(b)
	}
	b.deadline = time.Now().Add(a.timeout)
}

// flush sends the states batched to conductord, as one request of b.
func (a *storeAnswers) flush(b *storeBurst) {
	sts := a.batched
	a.batched = nil
	a.mu.Lock()
	a.lastReq++
	id := a.lastReq
	a.reqs[id] = sts
	b.reqs = append(b.reqs, id)
	a.mu.Unlock()
	// PublishMsg has copied the data when it returns: the batch is reused.
	err := a.nc.PublishMsg(&nats.Msg{Subject: a.storeSub, Reply: a.prefix + "b" + strconv.FormatUint(id, 10), Data: a.batch})
	a.batch = a.batch[:0]
	if err != nil {
		a.mu.Lock()
		delete(a.reqs, id)
		for _, st := range sts {
			a.settleLocked(st, err)
		}
		a.mu.Unlock()
	}
}

// answerBatch takes conductord's answer to a request of flush's.
func (a *storeAnswers) answerBatch(m *nats.Msg, id uint64) {
	a.mu.Lock()
	sts, ok := a.reqs[id]
	delete(a.reqs, id)
	a.mu.Unlock()
	if !ok {
		return // given up, or not a request of flush's
	}
	rs, err := hostsvc.ParseStoreAnswer(m, len(sts))
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, st := range sts {
		e := err
		if e == nil {
			e = hostsvc.ResultError(rs[i])
		}
		a.settleLocked(st, e)
	}
}

// answer takes the store's answer to one state.
func (a *storeAnswers) answer(m *nats.Msg) {
	if req, ok := strings.CutPrefix(m.Subject[len(a.prefix):], "b"); ok {
		if id, err := strconv.ParseUint(req, 10, 64); err == nil {
			a.answerBatch(m, id)
		}
		return
	}
	id, err := strconv.ParseUint(m.Subject[len(a.prefix):], 10, 64)
	if err != nil {
		return // not a subject of send's
	}
	err = storeError(m)
	a.mu.Lock()
	defer a.mu.Unlock()
	if id >= a.first && id-a.first < uint64(len(a.open)) {
		if st := a.open[id-a.first]; st != nil {
			a.settleLocked(st, err)
		}
	}
}

// settle records st's outcome, unless it has one already.
func (a *storeAnswers) settle(st *stateStore, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settleLocked(st, err)
}

func (a *storeAnswers) settleLocked(st *stateStore, err error) {
	if st.answered {
		return
	}
	a.open[st.id-a.first] = nil
	for len(a.open) > 0 && a.open[0] == nil {
		a.open = a.open[1:]
		a.first++
	}
	st.answered, st.err = true, err
	if b := st.burst; b.waitFor == st {
		close(b.wake)
		b.waitFor, b.wake = nil, nil
	}
}

// result reports whether st has its outcome, and the outcome.
func (a *storeAnswers) result(st *stateStore) (answered bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return st.answered, st.err
}

// wait waits for st's outcome; nil means stored. slow is called once the
// wait is longer than slowStore. A state not answered by its burst's
// deadline is given up, along with the rest of its burst. One goroutine
// waits on a burst's states, one at a time.
func (a *storeAnswers) wait(st *stateStore, slow func()) error {
	b := st.burst
	a.mu.Lock()
	if st.answered {
		a.mu.Unlock()
		return st.err // the common case: no timers
	}
	wake := make(chan struct{})
	b.waitFor, b.wake = st, wake
	a.mu.Unlock()
	quick := time.NewTimer(slowStore)
	defer quick.Stop()
	deadline := time.NewTimer(time.Until(b.deadline))
	defer deadline.Stop()
	for {
		select {
		case <-wake:
			_, err := a.result(st)
			return err
		case <-quick.C:
			slow()
		case <-deadline.C:
			late := fmt.Errorf("%w within %v", errNoAnswer, a.timeout)
			a.mu.Lock()
			for _, other := range b.stores {
				a.settleLocked(other, late)
			}
			for _, id := range b.reqs {
				delete(a.reqs, id)
			}
			err := st.err
			a.mu.Unlock()
			return err
		}
	}
}

// storeError is the error an answer of the store reports, nil if the state
// is stored.
func storeError(m *nats.Msg) error {
	if len(m.Data) == 0 {
		if status := m.Header.Get(names.HeaderNATSStatus); status != "" {
			if status == "503" {
				return errors.New("store: no responders: is the state bucket there?")
			}
			return fmt.Errorf("store: status %s %s", status, m.Header.Get(names.HeaderNATSDescription))
		}
		return errors.New("store: empty answer")
	}
	// A stored state's answer is {"stream":"KV_…","seq":N} with perhaps
	// more fields, none of them an error: no need to decode it.
	if bytes.HasPrefix(m.Data, []byte(`{"stream":`)) && !bytes.Contains(m.Data, []byte(`"error"`)) {
		return nil
	}
	var ans struct {
		Stream string `json:"stream"`
		Error  *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &ans); err != nil {
		return fmt.Errorf("store: unreadable answer %.200q: %w", m.Data, err)
	}
	switch {
	case ans.Error != nil && (ans.Error.ErrCode == jsErrWrongLast || ans.Error.ErrCode == jsErrWrongLastConstant):
		return fmt.Errorf("store: %w: %s", errWrongLast, ans.Error.Description)
	case ans.Error != nil:
		return fmt.Errorf("store: %s (status %d, error code %d)", ans.Error.Description, ans.Error.Code, ans.Error.ErrCode)
	case ans.Stream == "":
		return fmt.Errorf("store: answer names no stream: %.200q", m.Data)
	}
	return nil
}
