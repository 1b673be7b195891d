package wire

import (
	"strconv"
	"strings"
)

// Holder is the claim on a job's state of the attempt that wrote it last,
// stored as Job.Holder: "<rank>.<seq>.<tag>". Writes of job states are
// conditional on the state's revision; when one fails because the state
// changed, its writer reads the state again and compares claims: the
// higher rank holds the job, and a write of a lower or equal one is
// superseded (see internal/agent's fence).
//
// Ranks come from the revisions of the state, so that every claim made
// after another ranks higher:
//   - A job's first delivery claims, without a write, the state its
//     submitter queued at revision r: rank 2r (FirstClaim).
//   - A redelivery, or a requeue, claims by a write that expects revision
//     r: rank 2r+1 (ClaimOver), above any claim on r or before it.
//
// Seq is the stream sequence of the job message the attempt is a
// delivery of: a redelivery of another message of the same job (a copy)
// does not take over a state held by this one's attempt while the job
// runs. 0: none (a requeue's claim).
//
// The tag tells apart two claims of one rank (two copies of a message)
// and tells a writer its own claim.
type Holder struct {
	Rank uint64
	Seq  uint64
	Tag  string
}

// FirstClaim is the claim of the first delivery of job message seq on the
// state its submitter queued at revision rev (0: it had none).
func FirstClaim(rev, seq uint64, tag string) Holder {
	return Holder{Rank: 2 * rev, Seq: seq, Tag: tag}
}

// ClaimOver is the claim of a delivery of job message seq by a write that
// expects revision rev of the state.
func ClaimOver(rev, seq uint64, tag string) Holder {
	return Holder{Rank: 2*rev + 1, Seq: seq, Tag: tag}
}

// String encodes h as Job.Holder stores it.
func (h Holder) String() string {
	return strconv.FormatUint(h.Rank, 10) + "." + strconv.FormatUint(h.Seq, 10) + "." + h.Tag
}

// ParseHolder decodes Job.Holder. "" (a state no attempt wrote) and
// anything unreadable are the zero Holder, which every claim outranks.
func ParseHolder(s string) Holder {
	rank, rest, ok := strings.Cut(s, ".")
	if !ok {
		return Holder{}
	}
	seq, tag, ok := strings.Cut(rest, ".")
	if !ok {
		return Holder{}
	}
	r, err1 := strconv.ParseUint(rank, 10, 64)
	q, err2 := strconv.ParseUint(seq, 10, 64)
	if err1 != nil || err2 != nil {
		return Holder{}
	}
	return Holder{Rank: r, Seq: q, Tag: tag}
}
