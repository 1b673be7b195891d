// A worker's requests: the questions a channel worker asks while it runs
// (the protocol's lookup op), which the session passes to the pool's
// Config.OnRequest and whose answers it writes back on fd 3. The session
// owns its requests in flight (at most maxRequests) and the answers
// waiting to be written; OnRequest answers from any goroutine through
// the session's replies channel, which never blocks.

package broker

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/conductor-run/conductor/internal/proto"
)

// RequestLookup is the kind of a Request for a lookup.
const RequestLookup = "lookup"

// The actions of a lookup Request.
const (
	LookupGet  = proto.LookupGet
	LookupSet  = proto.LookupSet
	LookupDel  = proto.LookupDel
	LookupKeys = proto.LookupKeys
)

// A Request is a question a channel worker asks while it runs, for the
// pool's owner to answer (Config.OnRequest): for now, a lookup.
type Request struct {
	// Index and PID name the worker asking.
	Index int
	PID   int
	// Kind is RequestLookup.
	Kind string
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
type Reply struct {
	Value json.RawMessage
	Rev   uint64
	Keys  []string
	Error string
	Code  int
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

// request takes a request op of the worker's: it passes it to
// Config.OnRequest, or answers it with an error when no one takes
// requests, the op is unknown, or too many are in flight.
func (ss *session) request(m proto.Message) {
	if m.Req == 0 {
		ss.s.log.Warn("request without a req number from worker; ignored", "pid", ss.p.pid, "op", m.Op)
		return
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
	replies, req := ss.replies, m.Req
	var once sync.Once // a second answer is dropped: the first counts
	on(Request{Index: ss.s.index, PID: ss.p.pid, Kind: string(m.Op), Do: m.Do, Name: m.Name, Key: m.Key, Value: m.Value}, func(r Reply) {
		once.Do(func() { replies <- answered{req: req, reply: r} }) // room for every request in flight
	})
	// Answers at hand go out now (the deferred write), in one write.
	for {
		select {
		case a := <-ss.replies:
			ss.replied(a)
			continue
		default:
		}
		return
	}
}

// replied takes an answer from Config.OnRequest.
func (ss *session) replied(a answered) {
	ss.inFlight--
	ss.answer(a.req, a.reply)
}

// answer queues the reply to request req for writeAnswers.
func (ss *session) answer(req uint64, r Reply) {
	m := proto.Message{Op: proto.OpReply, Req: req, Value: r.Value, Rev: r.Rev, Keys: r.Keys, Error: r.Error, Code: r.Code}
	if r.Error == "" {
		m.Code = 0
	} else if m.Code == 0 {
		m.Code = 500
	}
	b, err := proto.Append(ss.answers, m)
	if err != nil {
		// A value that is not JSON: the owner's fault, not the worker's.
		b, _ = proto.Append(ss.answers, proto.Message{Op: proto.OpReply, Req: req, Error: "the answer could not be encoded", Code: 500})
	}
	ss.answers = b
}

// writeAnswers writes the answers queued, in one write, unless a job is
// being written (wrote calls it after). A worker that does not read them
// within replyWriteTimeout is killed: its channel may hold half a line.
func (ss *session) writeAnswers() {
	if len(ss.answers) == 0 || ss.writing != nil || ss.p.inClosed {
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
	ss.answers = lines[:0]
}
