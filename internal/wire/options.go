package wire

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/token"
)

// Options are a job's own settings, carried in the headers of its message
// on the job stream. This file is their one codec: the submitters encode
// them with Encode after Check, and workerd decodes them with
// DecodeOptions, against the same rules.
type Options struct {
	// Batch is the id of the batch the job belongs to; empty: none.
	Batch string
	// Submitter is the credential the job is submitted on behalf of;
	// empty: none. A header that is not a valid token is left out.
	Submitter string
	// Timeout bounds each attempt instead of the pool's job_timeout; 0:
	// the pool's.
	Timeout time.Duration
	// MaxAttempts is the job's own attempt limit instead of the pool's
	// max_attempts; 0: the pool's.
	MaxAttempts int
	// NotBefore is when the job may run first; zero: at once.
	NotBefore time.Time
	// Requeued marks a dead job queued again: its attempts count from 1
	// again, and its earlier history is kept.
	Requeued bool
	// StateRev is the revision of the job's state when it was queued,
	// which its first attempt's write expects; 0: it had no state.
	StateRev uint64
	// Payload is where the job's payload is when it is passed by
	// reference (its message's data is empty then); nil: in the message.
	Payload *PayloadRef
	// PayloadBad is set when the message's payload headers name no
	// reference that can be read: the job cannot run.
	PayloadBad bool
}

// Header is what Options are encoded into and decoded from: a nats.Header
// or an http.Header.
type Header interface {
	Get(key string) string
	Set(key, value string)
}

// Check reports the first setting that no job may have.
func (o Options) Check() error {
	switch {
	case o.Timeout < 0:
		return fmt.Errorf("negative timeout %s", o.Timeout)
	case o.MaxAttempts < 0:
		return fmt.Errorf("max attempts %d is not 1 or more", o.MaxAttempts)
	case o.Submitter != "" && token.Check("credential id", o.Submitter) != nil:
		return token.Check("credential id", o.Submitter)
	}
	return nil
}

// ParseTimeout reads a job's timeout as a submitter or a header gives it:
// a positive Go duration ("30s").
func ParseTimeout(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, errNotDuration
	}
	return d, nil
}

// ParseMaxAttempts reads a job's attempt limit: a whole number, 1 or more.
func ParseMaxAttempts(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, errNotPositive
	}
	return n, nil
}

// ParseDelay reads how long a submitted job waits before it runs: a Go
// duration, 0 or more ("10m").
func ParseDelay(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, errors.New("want a duration such as 10m")
	}
	return d, nil
}

// Encode sets o's headers on h; a setting at its zero value sets none.
func (o Options) Encode(h Header) {
	if o.Requeued {
		h.Set(names.HeaderRequeued, "1")
	}
	if o.Batch != "" {
		h.Set(names.HeaderBatch, o.Batch)
	}
	if o.Submitter != "" {
		h.Set(names.HeaderSubmitter, o.Submitter)
	}
	if o.Timeout > 0 {
		h.Set(names.HeaderTimeout, o.Timeout.String())
	}
	if o.MaxAttempts > 0 {
		h.Set(names.HeaderMaxAttempts, strconv.Itoa(o.MaxAttempts))
	}
	if !o.NotBefore.IsZero() {
		h.Set(names.HeaderNotBefore, o.NotBefore.UTC().Format(time.RFC3339Nano))
	}
	if o.StateRev > 0 {
		h.Set(names.HeaderStateRev, strconv.FormatUint(o.StateRev, 10))
	}
	if o.Payload != nil {
		encodePayload(o.Payload, h)
	}
}

// HeaderError is a header that DecodeOptions could not read: the job runs
// as if it were absent.
type HeaderError struct {
	Header string
	Value  string
	Err    error
}

func (e *HeaderError) Error() string {
	return fmt.Sprintf("bad %s header %q: %v", e.Header, e.Value, e.Err)
}

func (e *HeaderError) Unwrap() error { return e.Err }

// MaxStateRev bounds a state revision read from a header, far above any
// real one, so that its claim's rank (wire.Holder) cannot overflow.
const MaxStateRev = 1 << 62

var (
	errNotRevision = errors.New("want a state revision, 1 to 2^62")
	errNotPositive = errors.New("want a whole number, 1 or more")
	errNotDuration = errors.New("want a positive duration such as 30s")
)

// DecodeOptions reads the options of a job from its message's headers. A
// header it cannot read is left out of the options and reported in bad,
// so that the job still runs, with its pool's setting.
func DecodeOptions(h Header) (o Options, bad []*HeaderError) {
	o.Batch = h.Get(names.HeaderBatch)
	if v := h.Get(names.HeaderSubmitter); v != "" {
		if err := token.Check("credential id", v); err != nil {
			bad = append(bad, &HeaderError{Header: names.HeaderSubmitter, Value: v, Err: err})
		} else {
			o.Submitter = v
		}
	}
	o.Requeued = h.Get(names.HeaderRequeued) != ""
	if v := h.Get(names.HeaderMaxAttempts); v != "" {
		var err error
		if o.MaxAttempts, err = ParseMaxAttempts(v); err != nil {
			bad = append(bad, &HeaderError{Header: names.HeaderMaxAttempts, Value: v, Err: err})
		}
	}
	if v := h.Get(names.HeaderTimeout); v != "" {
		var err error
		if o.Timeout, err = ParseTimeout(v); err != nil {
			bad = append(bad, &HeaderError{Header: names.HeaderTimeout, Value: v, Err: err})
		}
	}
	if v := h.Get(names.HeaderNotBefore); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			o.NotBefore = t
		} else {
			bad = append(bad, &HeaderError{Header: names.HeaderNotBefore, Value: v, Err: err})
		}
	}
	if v := h.Get(names.HeaderStateRev); v != "" {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > 0 && n <= MaxStateRev {
			o.StateRev = n
		} else {
			bad = append(bad, &HeaderError{Header: names.HeaderStateRev, Value: v, Err: errNotRevision})
		}
	}
	if ref, err := DecodePayload(h); err != nil {
		bad, o.PayloadBad = append(bad, err), true
	} else {
		o.Payload = ref
	}
	return o, bad
}
