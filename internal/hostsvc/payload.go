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
	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/wire"
)

// Payload reads: a host with a credential of its own reads the payloads
// passed by reference of its types' jobs through conductord, a chunk a
// request (wire.PayloadRead), for its credential may read no stream:
// the payload bucket holds every type's, and its messages can be read
// one after the other. conductord answers with an object whose
// description names the type of the request's subject
// (payloads.HeaderType) only. The host checks what it reads against its
// job's reference, as a host reading the bucket does.

// payloadReqRate is each credential's reads of payload chunks a second:
// of 256 KiB each, some 500 MB/s.
const payloadReqRate = 2_000

func (s *Server) payloadReq(m *nats.Msg) {
	id, ok := s.caller(m)
	if !ok {
		return
	}
	typ, ok := s.requestType(m)
	if !ok {
		return
	}
	var req wire.PayloadRead
	if err := json.Unmarshal(m.Data, &req); err != nil || req.Object == "" || len(req.Object) > wire.MaxObjectName {
		s.answer(m, http.StatusBadRequest, errorBody(errors.New("want {\"object\":NAME,\"from\":SEQ}")))
		return
	}
	if !s.admit(m, &s.payloadReqs, id) {
		return
	}
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	defer cancel()
	bucket := s.payloads.Name()
	stream, err := s.payloads.Stream(ctx)
	if err != nil {
		s.answer(m, http.StatusServiceUnavailable, errorBody(err))
		return
	}
	info, err := payloads.ReadInfo(ctx, stream, bucket, req.Object)
	switch {
	case errors.Is(err, payloads.ErrGone):
		s.answer(m, http.StatusNotFound, errorBody(err))
		return
	case err != nil:
		s.answer(m, http.StatusServiceUnavailable, errorBody(err))
		return
	case info.Headers.Get(payloads.HeaderType) != typ:
		s.answer(m, http.StatusForbidden, errorBody(fmt.Errorf("object %s is not a payload of type %s: refused", req.Object, typ)))
		return
	case req.From == 0:
		data, _ := json.Marshal(info)
		s.answer(m, http.StatusOK, json.RawMessage(data))
		return
	}
	data, seq, err := payloads.ReadChunk(ctx, stream, bucket, req.Object, info.NUID, req.From)
	switch {
	case errors.Is(err, payloads.ErrGone):
		s.answer(m, http.StatusNotFound, errorBody(err))
		return
	case err != nil:
		s.answer(m, http.StatusServiceUnavailable, errorBody(err))
		return
	}
	r := nats.NewMsg(m.Reply)
	r.Header.Set(names.HeaderStatus, strconv.Itoa(http.StatusOK))
	r.Header.Set(wire.HeaderPayloadSeq, strconv.FormatUint(seq, 10))
	r.Data = data
	if err := s.cfg.Conn.PublishMsg(r); err != nil {
		s.cfg.Log.Warn("answer a host", "err", err)
	}
}

// Payloads returns where the host's pool of type typ reads the payloads
// passed by reference: conductord, a chunk a request.
func (c *Caller) Payloads(typ string) payloads.Source { return &payloadCaller{c: c, typ: typ} }

type payloadCaller struct {
	c   *Caller
	typ string
}

// read asks conductord for what req names.
func (p *payloadCaller) read(ctx context.Context, req wire.PayloadRead) (*nats.Msg, error) {
	subj := p.c.sp.PayloadAs(p.c.id, p.typ)
	data, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, requestWait)
	defer cancel()
	m, err := p.c.nc.RequestWithContext(ctx, subj, data)
	if err != nil {
		return nil, fmt.Errorf("read payload object %s through conductord: %w", req.Object, err)
	}
	switch code, _ := strconv.Atoi(m.Header.Get(names.HeaderStatus)); code {
	case http.StatusOK:
		return m, nil
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w: %v", payloads.ErrGone, answerError(subj, m, code))
	case http.StatusForbidden:
		return nil, fmt.Errorf("%w: %v", payloads.ErrNotMatching, answerError(subj, m, code))
	default:
		return nil, answerError(subj, m, code)
	}
}

func (p *payloadCaller) Info(ctx context.Context, name string) (*jetstream.ObjectInfo, error) {
	m, err := p.read(ctx, wire.PayloadRead{Object: name})
	if err != nil {
		return nil, err
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return nil, fmt.Errorf("read payload object %s through conductord: %w", name, err)
	}
	return &info, nil
}

func (p *payloadCaller) Chunk(ctx context.Context, name, _ string, from uint64) ([]byte, uint64, error) {
	m, err := p.read(ctx, wire.PayloadRead{Object: name, From: from})
	if err != nil {
		return nil, 0, err
	}
	seq, err := strconv.ParseUint(m.Header.Get(wire.HeaderPayloadSeq), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("read payload object %s through conductord: no sequence in the answer", name)
	}
	return m.Data, seq, nil
}
