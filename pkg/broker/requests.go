// A worker's requests: the questions a channel worker asks while it runs
// (the protocol's lookup op), which the session passes to the pool's
// Config.OnRequest and whose answers it writes back on fd 3. The session
// owns its requests in flight (at most maxRequests) and the answers
// waiting to be written; OnRequest answers from any goroutine through
// the session's replies channel, which never blocks.
//
// A worker that keeps lookup answers (its ready op's cache) may keep
// those marked keep, until a drop op names their key. The session marks
// an answer keep only if OnRequest's Reply says so and no change of the
// key (Pool.LookupChanged, on the slot's changedC) or loss of them all
// (LookupsLost, lostC) came between the request and the answer; it
// tracks the keys its worker keeps (kept), and writes a drop after the
// answer when one of them changes. A change sent before the answer is
// written was made after the request was taken: the order of the
// session's writes is the order of the truth.

package broker

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/conductor-run/conductor/internal/proto"
)

// The kinds of a Request: a lookup, or a command for the conductor side
// (the protocol's request op).
const (
	RequestLookup  = "lookup"
	RequestCommand = "request"
)

// The actions of a lookup Request.
const (
	LookupGet  = "get"
	LookupSet  = "set"
	LookupDel  = "del"
	LookupKeys = "keys"
)

// A Request is a question a channel worker asks while it runs, for the
// pool's owner to answer (Config.OnRequest): a lookup, or a command.
type Request struct {
	// Index and PID name the worker asking.
	Index int
	PID   int
	// Kind is RequestLookup or RequestCommand.
	Kind string
	// Command and Data are a RequestCommand's: what it asks, and with
	// what (any JSON, as the worker sent it).
	Command string
	Data    json.RawMessage
	// Do is the lookup's action: LookupGet, LookupSet, LookupDel or
	// LookupKeys; Name and Key what it acts on, Value what a set writes
	// (JSON, as the worker sent it).
	Do    string
	Name  string
	Key   string
	Value json.RawMessage
}

// A Reply answers a Request: Value and Rev (a get, a set), Keys (a keys
// lookup), or Error with Code, which classes it as HTTP does (400 a
// request refused, 404 no such key, 413 too large, 429 too many requests,
// 503 the answer cannot be had now).
//
// Watched, in the answer to a get (a value, or a 404), says that the
// pool will be told of the key's next change (Pool.LookupChanged or
// LookupsLost) by whoever answers: the worker may then keep the answer
// until then.
type Reply struct {
	// Data answers a RequestCommand.
	Data    json.RawMessage
	Value   json.RawMessage
	Rev     uint64
	Keys    []string
	Error   string
	Code    int
	Watched bool
}

// lookupKey names a lookup's key.
type lookupKey struct{ name, key string }

// kept is the session's record of a key its worker may keep: gets of it
// in flight, whether a change came while they were, and whether the
// worker keeps an answer.
type kept struct {
	pending int
	dirty   bool
	held    bool
}

// maxKept bounds the keys a worker may keep, whatever its ready op asks;
// changedBuffer the changes waiting for a session, past which it drops
// every kept answer.
const (
	maxKept       = 1024
	changedBuffer = 256
)

// LookupChanged tells the pool's workers that key of lookup name
// changed: those that keep its value drop it. It does not block.
func (p *Pool) LookupChanged(name, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		select {
		case s.changedC <- lookupKey{name, key}:
		default:
			s.lose()
		}
	}
}

// LookupsLost tells the pool's workers that any lookup may have changed:
// they drop every value they keep. It does not block.
func (p *Pool) LookupsLost() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		s.lose()
	}
}

func (s *slot) lose() {
	select {
	case s.lostC <- struct{}{}:
	default: // one is pending
	}
}

// maxRequests bounds a worker's requests in flight: past it, a request is
// answered at once with a 429.
const maxRequests = 64

// replyWriteTimeout bounds the write of an answer: a worker that does not
// read its channel for that long is replaced.
const replyWriteTimeout = 5 * time.Second

// answered is a Reply on its way back to the session, with the request it
// answers.
type answered struct {
	req   uint64
	reply Reply
}

// asked is a get in flight whose answer the worker may keep.
type asked struct {
	key lookupKey
}

// request takes a request op of the worker's: it passes it to
// Config.OnRequest, or answers it with an error when no one takes
// requests, the op is unknown, or too many are in flight.
func (ss *session) request(m proto.Message) {
	if m.Req == 0 {
		if !ss.warnedNoReq { // once per process: a worker may send many
			ss.warnedNoReq = true
			ss.s.log.Warn("request without a req number from worker; ignored (said once)", "pid", ss.p.pid, "op", m.Op)
		}
		return
	}
	if ss.p.inClosed || ss.answersCut {
		return // fd 3 is closed, or the worker is being replaced: no answer can reach it
	}
	defer ss.writeAnswers()
	on := ss.s.pool.onRequest
	switch {
	case on == nil:
		ss.answer(m.Req, Reply{Error: "this pool takes no requests", Code: 501})
		return
	case ss.inFlight >= maxRequests:
		ss.answer(m.Req, Reply{Error: fmt.Sprintf("too many requests in flight (at most %d)", maxRequests), Code: 429})
		return
	}
	ss.inFlight++
	if m.Do == LookupGet && ss.keeps > 0 {
		ss.track(m.Req, lookupKey{m.Name, m.Key})
	}
	replies, req := ss.replies, m.Req
	var once sync.Once // a second answer is dropped: the first counts
	on(Request{Index: ss.s.index, PID: ss.p.pid, Kind: string(m.Op), Command: m.Command, Data: m.Data, Do: m.Do, Name: m.Name, Key: m.Key, Value: m.Value}, func(r Reply) {
		once.Do(func() { replies <- answered{req: req, reply: r} }) // room for every request in flight
	})
	// Answers at hand go out now (the deferred write), in one write.
	for {
		select {
		case a := <-ss.replies:
			ss.replied(a)
		default:
			return
		}
	}
}

// replied takes an answer from Config.OnRequest. The changes told
// before it came are taken first: a write's answer comes after the
// change of its key (Pool.LookupChanged), and its worker must read the
// drop of the key it kept before the answer.
func (ss *session) replied(a answered) {
	ss.takeChanges()
	ss.inFlight--
	a.reply.Watched = ss.untrack(a.req, a.reply.Watched)
	ss.answer(a.req, a.reply)
}

// track notes get req of key, whose answer the worker may keep. With no
// room for one more key, the worker is told to drop one it keeps (any)
// first; if every key is in flight, this one is not tracked.
func (ss *session) track(req uint64, k lookupKey) {
	e, ok := ss.kept[k]
	if !ok {
		if len(ss.kept) >= ss.keeps && !ss.evict() {
			return
		}
		e = &kept{}
		ss.kept[k] = e
	}
	e.pending++
	ss.tracked[req] = asked{key: k}
}

// untrack ends get req, and reports whether its answer, watched as
// OnRequest says, may be kept: no change of its key came meanwhile.
func (ss *session) untrack(req uint64, watched bool) bool {
	a, ok := ss.tracked[req]
	if !ok {
		return false
	}
	delete(ss.tracked, req)
	e := ss.kept[a.key]
	e.pending--
	keep := watched && !e.dirty
	if keep {
		e.held = true
	}
	if e.pending == 0 {
		e.dirty = false
		if !e.held {
			delete(ss.kept, a.key)
		}
	}
	return keep
}

// evict makes room for one key: the worker drops one it keeps, and
// reports whether there was one.
func (ss *session) evict() bool {
	for k, e := range ss.kept {
		if e.pending == 0 {
			delete(ss.kept, k)
			ss.queue(proto.Message{Op: proto.OpDrop, Name: k.name, Key: k.key})
			return true
		}
	}
	return false
}

// changed takes a change of key k: a kept answer of it is dropped, and
// one on its way is not kept.
func (ss *session) changed(k lookupKey) {
	e, ok := ss.kept[k]
	if !ok {
		return
	}
	if e.pending > 0 {
		e.dirty = true
	}
	if e.held {
		e.held = false
		ss.queue(proto.Message{Op: proto.OpDrop, Name: k.name, Key: k.key})
	}
	if e.pending == 0 {
		delete(ss.kept, k)
	}
}

// lost takes a loss of every key: every kept answer is dropped, in one
// drop op, and none on its way is kept.
func (ss *session) lost() {
	held := false
	for k, e := range ss.kept {
		held = held || e.held
		e.held = false
		if e.pending > 0 {
			e.dirty = true
		} else {
			delete(ss.kept, k)
		}
	}
	if held {
		ss.queue(proto.Message{Op: proto.OpDrop})
	}
}

// queue encodes m for the next writeAnswers.
func (ss *session) queue(m proto.Message) {
	if ss.answersCut {
		return
	}
	if b, err := proto.Append(ss.answers, m); err == nil {
		ss.answers = b
	}
	ss.boundAnswers()
}

// takeChanges takes the changes waiting for the session.
func (ss *session) takeChanges() {
	for {
		select {
		case k := <-ss.s.changedC:
			ss.changed(k)
		case <-ss.s.lostC:
			ss.lost()
		default:
			return
		}
	}
}

// maxAnswerBytes bounds the answers waiting to be written to a worker
// (while a job is written to it, or it does not read): past it, the
// worker is replaced, and its requests go unanswered.
const maxAnswerBytes = 4 << 20

// answer queues the reply to request req for writeAnswers.
func (ss *session) answer(req uint64, r Reply) {
	m := proto.Message{Op: proto.OpReply, Req: req, Data: r.Data, Value: r.Value, Rev: r.Rev, Keys: r.Keys, Error: r.Error, Code: r.Code, Keep: r.Watched}
	if r.Error == "" {
		m.Code = 0
	} else if m.Code == 0 {
		m.Code = 500
	}
	n := len(ss.answers)
	b, err := proto.Append(ss.answers, m)
	switch {
	case err != nil:
		// A value that is not JSON: the owner's fault, not the worker's.
		b, _ = proto.Append(b[:n], proto.Message{Op: proto.OpReply, Req: req, Error: "the answer could not be encoded", Code: 500})
	case len(b)-n-1 > proto.DefaultMaxLine:
		// A line the worker could not read (a long list of keys).
		b, _ = proto.Append(b[:n], proto.Message{Op: proto.OpReply, Req: req, Code: 413,
			Error: fmt.Sprintf("the answer of %d bytes is over the channel's line limit of %d bytes", len(b)-n-1, proto.DefaultMaxLine)})
	}
	ss.answers = b
	ss.boundAnswers()
}

// boundAnswers replaces the worker when the answers waiting for it pass
// maxAnswerBytes: it does not read them.
func (ss *session) boundAnswers() {
	if len(ss.answers) <= maxAnswerBytes || ss.answersCut {
		return
	}
	ss.s.log.Warn("the worker does not read its answers; killing it", "pid", ss.p.pid, "waiting_bytes", len(ss.answers))
	ss.answersCut, ss.answers = true, nil
	ss.killReason = "worker did not read its answers"
	ss.p.kill()
}

// writeAnswers writes the answers queued, in one write, unless a job is
// being written (wrote calls it after). A worker that does not read them
// within replyWriteTimeout is killed: its channel may hold half a line.
func (ss *session) writeAnswers() {
	if len(ss.answers) == 0 || ss.writing != nil || ss.p.inClosed || ss.answersCut {
		return
	}
	lines := ss.answers
	ss.answers = nil
	if err := ss.p.sendLines(lines, "reply", replyWriteTimeout); err != nil {
		ss.s.log.Warn("cannot write answers to the worker; killing it", "pid", ss.p.pid, "err", err)
		ss.killReason = "worker did not read its answers"
		ss.p.kill()
		return
	}
	if cap(lines) <= 64<<10 {
		ss.answers = lines[:0] // reused; a large one goes
	}
}
