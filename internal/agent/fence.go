package agent

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"slices"

	"github.com/conductor-run/conductor/internal/wire"
)

// Fencing: what a write of an attempt does when the state it expected has
// changed. Every write of a job's state is conditional on the revision its
// writer last knew (see heldJob.rev); one that fails reads the state again
// and asks fence. These are pure functions of the two states, tested from
// a table (fence_test.go); docs/reliability.md says what they promise.

// fenceVerdict is what fence decides of a write.
type fenceVerdict int

const (
	// fenceWrite: the write goes ahead, over the state read, as merged.
	fenceWrite fenceVerdict = iota
	// fenceEnded: the job had ended; the attempt's outcome is not kept,
	// and its message is acked (the job is over).
	fenceEnded
	// fenceNewer: a newer attempt holds the job; the outcome is not kept,
	// and the message is left to that attempt's host.
	fenceNewer
	// fenceStored: the state read is the end this attempt means to store,
	// stored by its own earlier write (one whose answer came too late, or
	// never): nothing to write, the outcome is kept.
	fenceStored
)

func (v fenceVerdict) String() string {
	switch v {
	case fenceWrite:
		return "write"
	case fenceEnded:
		return "ended"
	case fenceStored:
		return "stored"
	}
	return "newer"
}

// fence decides the write of mine, the state an attempt holding claim
// mineHolder means to store, when the stored state is cur (nil: there is
// none), at revision curRev. A state that is final is never replaced; one
// held by a claim of the same or a higher rank is not either
// (wire.Holder); a state that the same claim wrote, or one of a lower
// claim, is written over, merged with what others stored since (see
// takeOver). A first claim on a revision the state has not reached yet
// was not made on it (its revision came in a header anyone can write): it
// ranks lowest. A final state written by the same claim, of mine's status,
// is mine already (fenceStored): a write of it landed whose answer was
// lost, and it must not count as another's end.
func fence(cur *wire.Job, curRev uint64, mine *wire.Job, mineHolder wire.Holder) (fenceVerdict, *wire.Job) {
	if cur == nil {
		return fenceWrite, mine
	}
	if cur.Status.Final() {
		if mine.Status.Final() && cur.Status == mine.Status && wire.ParseHolder(cur.Holder) == mineHolder {
			// Only this claim writes with its holder: the end is its own.
			return fenceStored, cur
		}
		return fenceEnded, nil
	}
	if h := wire.ParseHolder(cur.Holder); h != mineHolder && rank(h, curRev) >= rank(mineHolder, curRev) {
		return fenceNewer, nil
	}
	return fenceWrite, takeOver(cur, mine)
}

// rank is h's rank, or 0 if h is a first claim on a revision past rev, the
// state's: no genuine claim is.
func rank(h wire.Holder, rev uint64) uint64 {
	if h.Rank%2 == 0 && h.Rank/2 > rev {
		return 0
	}
	return h.Rank
}

// takeOver returns mine written over cur: its own attempt (the last of its
// history) after cur's history, with the counts others keep (skipped
// deliveries, attempts dropped). An attempt of cur that never ended, other
// than mine, is marked lost: its host never reported, and the job is held
// by mine now.
func takeOver(cur, mine *wire.Job) *wire.Job {
	out := *mine
	out.Skipped = max(cur.Skipped, mine.Skipped)
	out.HistoryDropped = cur.HistoryDropped
	var own wire.Attempt
	if n := len(mine.History); n > 0 {
		own = mine.History[n-1]
	}
	history := slices.Clone(cur.History)
	if mine.Holder != "" && cur.Holder == mine.Holder && len(history) > 0 {
		history = history[:len(history)-1] // mine, as an earlier write left it
	}
	for i := range history {
		a := &history[i]
		if a.EndedAt.IsZero() && !a.Superseded {
			a.Lost = true
		}
	}
	out.History = append(history, own)
	capHistory(&out)
	return &out
}

// superseded returns cur with an attempt whose outcome was not kept, own,
// in its history as superseded: in place of a lost entry of the same
// attempt from the same host, if there is one, else before the attempt
// that holds the job.
func superseded(cur *wire.Job, own wire.Attempt) *wire.Job {
	out := *cur
	own.Superseded, own.Lost = true, false
	history := slices.Clone(cur.History)
	if i := slices.IndexFunc(history, func(a wire.Attempt) bool {
		return a.Lost && a.Attempt == own.Attempt && (a.Host == own.Host || a.Host == "")
	}); i >= 0 {
		history[i] = own
	} else {
		history = slices.Insert(history, max(len(history)-1, 0), own)
	}
	out.History = history
	capHistory(&out)
	return &out
}

// claimed returns the state of a redelivered job that its new attempt,
// own, claims (see wire.ClaimOver): prev's history, its unended attempts
// marked lost, then the attempts that left no trace at all (their host was
// lost before it stored anything) as lost entries, then own.
func claimed(prev *wire.Job, mine *wire.Job, requeued bool) *wire.Job {
	out := takeOver(prev, mine)
	if requeued {
		return out // attempts count from 1 again: no gap to fill
	}
	own := out.History[len(out.History)-1]
	last := 0
	for _, a := range out.History[:len(out.History)-1] {
		last = max(last, a.Attempt)
	}
	if last == 0 && prev.HistoryDropped > 0 {
		return out
	}
	var gap []wire.Attempt
	for n := last + 1; n < own.Attempt; n++ {
		gap = append(gap, wire.Attempt{Attempt: n, Lost: true})
	}
	if len(gap) > 0 {
		out.History = slices.Insert(out.History, len(out.History)-1, gap...)
		capHistory(out)
	}
	return out
}

// capHistory drops the oldest attempts past wire.MaxHistory, counting them.
func capHistory(j *wire.Job) {
	if n := len(j.History) - wire.MaxHistory; n > 0 {
		j.History = slices.Clone(j.History[n:])
		j.HistoryDropped += n
	}
}

// newTag returns a random tag for a claim (wire.Holder): 48 bits of the
// runtime's generator (ChaCha8, seeded by the system's entropy), which
// makes no system call, where crypto/rand made one per job.
func newTag() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return hex.EncodeToString(b[:6])
}
