package hostsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// Reads: a host with a credential of its own reads the state of a job
// (the fence's read of a redelivered job, of one whose write conflicted)
// through conductord, which answers only with a state of the type the
// subject names: a state is keyed by the job's id alone, so a host that
// read the bucket itself could read any job's state, result included,
// knowing its id. A state gone from the bucket is read from conductord's
// archive (Config.Archived), checked the same way.

// The reads are served by readWorkers subscriptions of a queue group,
// each on its own goroutine; a credential reads at most readReqRate
// states a second (a redelivery costs one, a conflict one).
const (
	readWorkers = 4
	readReqRate = 20_000
)

func (s *Server) readReq(m *nats.Msg) {
	id, ok := s.caller(m)
	if !ok {
		return
	}
	typ, ok := s.requestType(m)
	if !ok {
		return
	}
	key := string(m.Data)
	if err := subject.Token("job id", key); err != nil {
		s.answer(m, http.StatusBadRequest, errorBody(err))
		return
	}
	if !s.admit(m, &s.readReqs, id) {
		return
	}
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	defer cancel()
	data, rev, err := s.lookup(ctx, key)
	if err != nil {
		s.answer(m, http.StatusServiceUnavailable, errorBody(err))
		return
	}
	if data == nil {
		s.answer(m, http.StatusNotFound, errorBody(fmt.Errorf("job %s has no state", key)))
		return
	}
	if !s.store.bytes.AllowN(id, len(data)) {
		// What a host makes conductord read, of its states or another
		// type's, counts in its rate of bytes.
		s.answer(m, http.StatusTooManyRequests, errorBody(errTooMany))
		return
	}
	if h, err := readHead(data); err != nil || h.Type != typ {
		s.answer(m, http.StatusForbidden, errorBody(fmt.Errorf("job %s is not a job of type %s: refused", key, typ)))
		return
	}
	r := NewAnswer(m.Reply, http.StatusOK, json.RawMessage(data))
	r.Header.Set(wire.HeaderReadRev, strconv.FormatUint(rev, 10))
	if err := s.cfg.Conn.PublishMsg(r); err != nil {
		s.cfg.Log.Warn("answer a host", "err", err)
	}
}

// admit admits a read request m of credential id within its rate, or
// answers it 429; a request admitted must call s.wg.Done once served. A
// request that comes while the server stops goes unanswered: the host
// asks again.
func (s *Server) admit(m *nats.Msg, rate *rates, id string) bool {
	if !rate.Allow(id) {
		s.answer(m, http.StatusTooManyRequests, errorBody(errTooMany))
		return false
	}
	return s.enter()
}

// lookup returns job id's state and its revision in the bucket; from the
// archive, with revision 0; nil if neither has it.
func (s *Server) lookup(ctx context.Context, id string) ([]byte, uint64, error) {
	e, err := s.store.states.Get(ctx, id)
	switch {
	case err == nil:
		return e.Value(), e.Revision(), nil
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, fmt.Errorf("read job %s's state: %w", id, err)
	case s.cfg.Archived == nil:
		return nil, 0, nil
	}
	data, ok, err := s.cfg.Archived(id)
	if err != nil || !ok {
		return nil, 0, err
	}
	return data, 0, nil
}

// Read reads the state of job id, of type typ, through conductord: its
// data and revision (0 if it was read from the archive); nil data if the
// job has no state.
func (c *Caller) Read(ctx context.Context, typ, id string) ([]byte, uint64, error) {
	subj := c.sp.ReadAs(c.id, typ)
	ctx, cancel := context.WithTimeout(ctx, requestWait)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, subj, []byte(id))
	if err != nil {
		return nil, 0, fmt.Errorf("read job %s's state through conductord: %w", id, err)
	}
	switch code, _ := strconv.Atoi(m.Header.Get(names.HeaderStatus)); code {
	case http.StatusOK:
		rev, err := strconv.ParseUint(m.Header.Get(wire.HeaderReadRev), 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("read job %s's state through conductord: no revision in the answer", id)
		}
		return m.Data, rev, nil
	case http.StatusNotFound:
		return nil, 0, nil
	default:
		return nil, 0, fmt.Errorf("read job %s's state through conductord: %w", id, answerError(subj, m, code))
	}
}
