package wire

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/conductor-run/conductor/internal/names"
)

// PayloadRef names a payload passed by reference: an object of the
// namespace's payload bucket, with the size and digest its submitter
// wrote, which workerd checks what it reads against. A job's message
// carries it in its headers (names.HeaderPayloadObject and the two after
// it) and an empty body; its state carries it too, so that a dead job
// keeps it to be queued again (docs/protocol.md, "Large payloads").
type PayloadRef struct {
	Object string `json:"object"`
	Size   int64  `json:"size"`
	Digest string `json:"digest"`
}

// DigestPrefix starts every digest of a PayloadRef: the object store's
// SHA-256, in URL-safe base64 after it.
const DigestPrefix = "SHA-256="

// MaxObjectName bounds the name of a payload's object.
const MaxObjectName = 256

// Check reports what makes r no reference a job could carry.
func (r PayloadRef) Check() error {
	switch {
	case r.Object == "" || len(r.Object) > MaxObjectName:
		return fmt.Errorf("object name of %d bytes: want 1 to %d", len(r.Object), MaxObjectName)
	case strings.ContainsAny(r.Object, "\x00\r\n"):
		return errors.New("object name with a control character")
	case r.Size <= 0:
		return fmt.Errorf("size %d: want 1 or more", r.Size)
	case !strings.HasPrefix(r.Digest, DigestPrefix) || len(r.Digest) != len(DigestPrefix)+44:
		return fmt.Errorf("digest %.80q: want %s and 44 characters of URL-safe base64", r.Digest, DigestPrefix)
	}
	return nil
}

// encodePayload sets r's headers on h.
func encodePayload(r *PayloadRef, h Header) {
	h.Set(names.HeaderPayloadObject, r.Object)
	h.Set(names.HeaderPayloadSize, strconv.FormatInt(r.Size, 10))
	h.Set(names.HeaderPayloadDigest, r.Digest)
}

// DecodePayload reads the reference of h, if it names one: nil and no
// error if none of its headers is set. A reference that cannot be read is
// an error: its job cannot run, for its payload is nowhere else.
func DecodePayload(h Header) (*PayloadRef, *HeaderError) {
	obj, size, digest := h.Get(names.HeaderPayloadObject), h.Get(names.HeaderPayloadSize), h.Get(names.HeaderPayloadDigest)
	if obj == "" && size == "" && digest == "" {
		return nil, nil
	}
	r := &PayloadRef{Object: obj, Digest: digest}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil {
		return nil, &HeaderError{Header: names.HeaderPayloadSize, Value: size, Err: errors.New("want a size in bytes")}
	}
	r.Size = n
	if err := r.Check(); err != nil {
		return nil, &HeaderError{Header: names.HeaderPayloadObject, Value: obj, Err: err}
	}
	return r, nil
}
