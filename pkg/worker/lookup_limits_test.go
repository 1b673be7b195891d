package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/lookup"
	"github.com/conductor-run/conductor/pkg/worker"
)

// A reply longer than the worker's reader takes (proto.DefaultMaxLine,
// 1.06 MiB: the keys of a lookup holding its most keys, 2.6 MB, which
// workerd now answers 413 itself) fails its request with a 413: found by
// an outside review, the reader skipped it as a bad line, and
// LookupKeys, on a job's context with no deadline, waited for ever.
func TestLookup_ReplyPastTheLineLimitFails(t *testing.T) {
	t.Parallel()
	type got struct {
		keys []string
		err  error
	}
	results := make(chan got, 1)
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		keys, err := job.LookupKeys(ctx, "big")
		results <- got{keys, err}
		return nil, err
	})
	b.sendJob(t, "j1", "list", "null")
	ask := b.recv(t)
	require.Equal(t, "keys", ask.Do)

	keys := make([]string, lookup.DefaultMaxKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("%05d-%s", i, strings.Repeat("k", lookup.MaxKey-6))
	}
	// What the broker's session writes (session.answer: proto.Append).
	line, err := proto.Append(nil, proto.Message{Op: proto.OpReply, Req: ask.Req, Keys: keys})
	require.NoError(t, err)
	require.Greater(t, len(line), proto.DefaultMaxLine)
	_, err = b.in.Write(line)
	require.NoError(t, err)

	select {
	case g := <-results:
		le, ok := errors.AsType[*worker.LookupError](g.err)
		require.True(t, ok, "%v", g.err)
		require.Equal(t, 413, le.Code)
	case <-time.After(5 * time.Second):
		t.Fatalf("LookupKeys did not return: its reply, a line of %d bytes, was dropped by the worker's reader (at most %d)", len(line), proto.DefaultMaxLine)
	}
}
