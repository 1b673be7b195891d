package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/wire"
)

// boundStore is the payload bucket's stream, bound once.
type boundStore struct {
	mu     sync.Mutex
	stream jetstream.Stream
}

// payloadStream returns the stream of the namespace's payload bucket,
// binding it first.
func (c *Client) payloadStream(ctx context.Context) (jetstream.Stream, error) {
	b := &c.payloads
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stream != nil {
		return b.stream, nil
	}
	bucket := c.space.PayloadBucket()
	stream, err := c.js.Stream(ctx, payloads.StreamName(bucket))
	if err != nil {
		return nil, fmt.Errorf("conductor: open the payload bucket %s (a conductord older than large payloads makes none): %w", bucket, err)
	}
	b.stream = stream
	return stream, nil
}

// putPayload stores data, the payload of job id of type typ, in the
// payload bucket.
func (c *Client) putPayload(ctx context.Context, typ, id string, data []byte) (*wire.PayloadRef, error) {
	stream, err := c.payloadStream(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, payloadPutTimeout)
	defer cancel()
	ref, err := payloads.Put(ctx, c.js, stream, c.space.PayloadBucket(), typ, id, data)
	if err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	return &ref, nil
}

// payloadPutTimeout bounds the store of one payload: at the largest
// (256 MiB) some 1.5 MB/s.
const payloadPutTimeout = 3 * time.Minute

// deletePayload removes the object of a payload that no job names (its
// job's publish failed).
func (c *Client) deletePayload(ctx context.Context, ref *wire.PayloadRef) error {
	stream, err := c.payloadStream(ctx)
	if err != nil {
		return err
	}
	return payloads.Delete(ctx, stream, c.space.PayloadBucket(), ref.Object)
}
