package hostsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
)

// Proofs: a first state names its job's message (checkJob), which
// conductord reads to check it. A burst of first states names messages
// near one another in the stream (a host takes its jobs in order), so
// that one batched read of the range they span, of the messages of the
// burst's type (of normal priority) only, proves them all, where a read
// each would cost a round trip each. A state the batch does not prove is
// checked by a read of its own.

// A request's first states are read in one batch when they are at least
// two and their messages lie within maxProofSpan sequences, at least one
// in proofDensity of them; the batch brings proofBytes at most (the
// server cuts it there, and the rest are read one by one).
const (
	maxProofSpan = 4096
	proofDensity = 8
	proofBytes   = 1 << 20
)

// jobRef is what a job message shows of its job: the type its subject
// names, and its id.
type jobRef struct{ typ, id string }

// proofs are the job messages of a type a batched read found, by
// sequence.
type proofs struct {
	refs map[uint64]jobRef
}

// has returns what p found at seq, if it did.
func (p *proofs) has(seq uint64) (jobRef, bool) {
	if p == nil {
		return jobRef{}, false
	}
	ref, ok := p.refs[seq]
	return ref, ok
}

// prove reads in one batch the job messages that items' first states
// name, if they are near enough one another; nil if it did not (the
// checks then read them one by one). Its reads count within reads, one
// for each message proved.
func (st *storer) prove(ctx context.Context, typ string, items []wire.StoreItem, reads *readBudget) *proofs {
	var lo, hi uint64
	n := 0
	for _, it := range items {
		if it.Op == wire.StoreDead || it.Rev != 0 || it.Seq == 0 {
			continue
		}
		if n == 0 || it.Seq < lo {
			lo = it.Seq
		}
		hi = max(hi, it.Seq)
		n++
	}
	span := hi - lo + 1
	if n < 2 || span > maxProofSpan || span > uint64(proofDensity*n) {
		return nil
	}
	if readN(reads, n) != nil {
		return nil
	}
	p, err := st.readRange(ctx, st.sp.Job(typ), lo, hi)
	if err != nil {
		return nil // each read again, and refused there if it must be
	}
	return p
}

// readRange reads the job messages on subj from lo through hi in one
// batched direct get.
func (st *storer) readRange(ctx context.Context, subj string, lo, hi uint64) (*proofs, error) {
	n := int(hi - lo + 1)
	inbox := st.nc.NewInbox()
	answers := make(chan *nats.Msg, n+1) // the messages, then the end of the batch
	sub, err := st.nc.ChanSubscribe(inbox, answers)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	// A batch brings the n messages on subj from lo on: those past hi
	// too, if some before it are not on subj.
	req, _ := json.Marshal(struct {
		Seq      uint64 `json:"seq"`
		NextFor  string `json:"next_by_subj"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes"`
	}{lo, subj, n, proofBytes})
	if err := st.nc.PublishRequest("$JS.API.DIRECT.GET."+st.sp.JobStream(), inbox, req); err != nil {
		return nil, err
	}
	p := &proofs{refs: make(map[uint64]jobRef, n)}
	last := uint64(0)
	for {
		select {
		case m := <-answers:
			switch status := m.Header.Get(names.HeaderNATSStatus); status {
			case "":
			case "204", "404": // the end of the batch; none at all
				return p, nil
			default:
				return nil, fmt.Errorf("read the job messages %d-%d: status %s %s", lo, hi, status, m.Header.Get(names.HeaderNATSDescription))
			}
			seq, err := strconv.ParseUint(m.Header.Get(jsSequence), 10, 64)
			if err != nil || seq < lo || seq <= last {
				return nil, errors.New("read the job messages: an answer out of order")
			}
			if typ, _ := st.sp.ParseJob(m.Header.Get(jsSubject)); seq <= hi && m.Header.Get(jsSubject) == subj {
				p.refs[seq] = jobRef{typ: typ, id: wire.MessageJobID(m.Header, seq)}
			}
			last = seq
		case <-ctx.Done():
			return nil, fmt.Errorf("read the job messages %d-%d: %w", lo, hi, ctx.Err())
		}
	}
}

// The headers of a direct get's answer: the message's stream sequence and
// subject.
const (
	jsSequence = "Nats-Sequence"
	jsSubject  = "Nats-Subject"
)
