package hostsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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

// proofs are the job messages of a type a batched read found, by
// sequence.
type proofs struct {
	refs map[uint64]string // job ids
}

// has returns the id of the job whose message p found at seq, if it did.
func (p *proofs) has(seq uint64) (id string, ok bool) {
	if p == nil {
		return "", false
	}
	ref, ok := p.refs[seq]
	return ref, ok
}

// prove reads in one batch the job messages that items' first states
// name, if they are near enough one another, of normal priority, then
// those it did not find, of high and low; nil if it read none (the checks
// then read them one by one). Each batch counts as one read within
// reads.
func (st *storer) prove(ctx context.Context, typ string, items []wire.StoreItem, reads *readBudget) *proofs {
	var seqs []uint64
	for _, it := range items {
		if it.Op != wire.StoreDead && it.Rev == 0 && it.Seq != 0 {
			seqs = append(seqs, it.Seq)
		}
	}
	var p *proofs
	for _, subj := range []string{st.sp.Job(typ), st.sp.Job(typ) + ".*"} {
		lo, hi, ok := dense(seqs)
		if !ok || read(reads) != nil {
			break
		}
		found, err := st.readRange(ctx, typ, subj, lo, hi)
		if err != nil {
			break // each read again, and refused there if it must be
		}
		if p == nil {
			p = found
		} else {
			maps.Copy(p.refs, found.refs)
		}
		seqs = slices.DeleteFunc(seqs, func(seq uint64) bool { _, ok := found.refs[seq]; return ok })
	}
	return p
}

// dense returns the range seqs span, and whether one batched read of it
// is worth it: two sequences at least, within maxProofSpan, at least one
// in proofDensity of the range.
func dense(seqs []uint64) (lo, hi uint64, ok bool) {
	if len(seqs) < 2 {
		return 0, 0, false
	}
	lo, hi = slices.Min(seqs), slices.Max(seqs)
	span := hi - lo + 1
	return lo, hi, span <= maxProofSpan && span <= uint64(proofDensity*len(seqs))
}

// readRange reads the job messages of type typ on subj (its normal
// priority's subject, or its others') from lo through hi in one batched
// direct get.
func (st *storer) readRange(ctx context.Context, typ, subj string, lo, hi uint64) (*proofs, error) {
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
	p := &proofs{refs: make(map[uint64]string, n)}
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
			if t, _ := st.sp.ParseJob(m.Header.Get(jsSubject)); seq <= hi && t == typ {
				p.refs[seq] = wire.MessageJobID(m.Header, seq)
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
