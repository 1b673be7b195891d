package wire

import "time"

// The services conductord gives hosts (pkg/conductor's hostservices.go),
// so that a host makes no consumer of its own: its job types' consumers,
// and the cancelled job ids.

// ConsumersRequest asks conductord for the consumers of a job type, one
// per priority: made if missing, changed to these settings if not.
type ConsumersRequest struct {
	// AckWait is how long a job taken waits for its ack before it is
	// delivered again; conductord holds it to [MinAckWait, MaxAckWait].
	AckWait time.Duration `json:"ack_wait"`
	// AsTheyCome says the host asks a high or low consumer that is not
	// there again on its own, so conductord may make those only once
	// their jobs come. A host that does not say it (one from before) gets
	// all three: its fetcher would ask for them for ever.
	AsTheyCome bool `json:"priorities_as_they_come,omitempty"`
}

// The bounds of ConsumersRequest.AckWait.
const (
	MinAckWait = time.Second
	MaxAckWait = time.Hour
)

// CancelsRequest asks for a page of the cancelled job ids conductord
// holds: those numbered past After.
type CancelsRequest struct {
	After uint64 `json:"after"`
}

// CancelsPage is a page of the cancelled job ids, in the order
// conductord learnt them.
type CancelsPage struct {
	// Epoch names the conductord process that numbers the ids: the
	// numbers of another are not comparable.
	Epoch string `json:"epoch"`
	// IDs are the ids numbered past the request's After, up to Last.
	IDs []string `json:"ids"`
	// Last is the number of the page's last id (After if none); with More
	// false, the number of the last id conductord has published on the
	// feed (subject.Space.CancelFeed) when it answered.
	Last uint64 `json:"last"`
	// More says that ids past Last are held: ask again with After = Last.
	More bool `json:"more,omitempty"`
	// TTL is how long an id is held after it was cancelled (the cancel
	// bucket's); 0 for ever.
	TTL time.Duration `json:"ttl,omitempty"`
}

// The feed's message headers: its epoch and its number.
const (
	HeaderCancelEpoch = "Conductor-Cancel-Epoch"
	HeaderCancelSeq   = "Conductor-Cancel-Seq"
	// HeaderReadRev is the revision of the state of an answer to a host's
	// read (hostsvc's); 0 for a state read from conductord's archive.
	HeaderReadRev = "Conductor-Read-Rev"
	// HeaderPayloadSeq is the stream sequence of the chunk of a payload's
	// object that answers a host's read of it (hostsvc's).
	HeaderPayloadSeq = "Conductor-Payload-Seq"
)

// PayloadRead is a host's read of a payload passed by reference, through
// conductord: the description of object Object if From is 0, else its
// first chunk at or after stream sequence From.
type PayloadRead struct {
	Object string `json:"object"`
	From   uint64 `json:"from,omitempty"`
}
