package client

import (
	"context"
	"fmt"
	"time"

	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/wire"
)

// putPayload stores data, the payload of job id of type typ, in the
// payload bucket.
func (c *Client) putPayload(ctx context.Context, typ, id string, data []byte) (*wire.PayloadRef, error) {
	ctx, cancel := context.WithTimeout(ctx, payloadPutTimeout)
	defer cancel()
	ref, err := payloads.Put(ctx, c.payloads, typ, id, data)
	if err != nil {
		return nil, fmt.Errorf("conductor: %w (a conductord older than large payloads makes no payload bucket)", err)
	}
	return &ref, nil
}

// payloadPutTimeout bounds the store of one payload: at the largest
// (256 MiB) some 1.5 MB/s.
const payloadPutTimeout = 3 * time.Minute

// deletePayload removes the object of a payload that no job names (its
// job's publish failed).
func (c *Client) deletePayload(ctx context.Context, ref *wire.PayloadRef) error {
	return payloads.Delete(ctx, c.payloads, ref.Object)
}
