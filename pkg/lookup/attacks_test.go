package lookup

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
)

// TestLookupAttack_KeysAnswerOverMaxPayload: a lookup of 700 legal keys,
// each 256 bytes whose JSON escapes are 6 bytes a byte, makes a keys
// answer past the server's largest message: the caller is answered 413
// (ErrTooMany), not left to time out.
func TestLookupAttack_KeysAnswerOverMaxPayload(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	store, err := Open(t.Context(), js, Config{Bucket: "conductor-default-lookups", Memory: true})
	require.NoError(t, err)
	svc, err := Serve(nc, store, prefix)
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	client := NewClient(natstest.Conn(t, ns), prefix)

	const n = 700
	for i := 0; i < n; i++ {
		key := strings.Repeat("\x01", MaxKey-6) + fmt.Sprintf("%06d", i)
		_, err := store.Set(t.Context(), "big", key, json.RawMessage(`1`))
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	keys, err := client.Keys(ctx, "big")
	if err != nil {
		assert.ErrorIs(t, err, ErrTooMany, "a keys answer too big for NATS should be a 413, not silence: %v", err)
		return
	}
	assert.Len(t, keys, n)
}

// TestLookupAttack_BucketUnbounded: the lookups' bucket is bounded in
// bytes and in a value's size, so that no writer grows conductord's disk
// (or memory) without limit.
func TestLookupAttack_BucketUnbounded(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t, Config{})
	st, err := s.kv.Status(t.Context())
	require.NoError(t, err)
	cfg := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
	assert.Greater(t, cfg.MaxBytes, int64(0), "the lookup bucket's MaxBytes: unbounded")
	assert.Greater(t, cfg.MaxMsgSize, int32(0), "the lookup bucket's MaxValueSize: unbounded")
}

// TestLookupAttack_SplitKeyNonCanonical: a bucket key storedKey never
// makes (another base64 spelling of a key) is not listed or watched as a
// key, since Get of that key reads another bucket key.
func TestLookupAttack_SplitKeyNonCanonical(t *testing.T) {
	t.Parallel()
	for _, stored := range []string{"n.=QQ", "n.=QR", "n.=YWJj" + "", "n.=YR"} {
		name, key, ok := splitKey(stored)
		if ok {
			assert.Equal(t, stored, storedKey(name, key), "bucket key %q taken as key %q of %q", stored, key, name)
		}
	}
}

// TestLookupAttack_SeedNotAtomic: a seed with one bad value fails (and
// with it conductord's start) with nothing stored: every seed is checked
// before any is written.
func TestLookupAttack_SeedNotAtomic(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t, Config{MaxValue: 100})
	keys := map[string]any{"bad": strings.Repeat("x", 200)}
	for i := 0; i < 50; i++ {
		keys[fmt.Sprintf("k%d", i)] = i
	}
	require.Error(t, s.Seed(t.Context(), map[string]map[string]any{"cfg": keys}))
	got, err := s.Keys(t.Context(), "cfg")
	require.NoError(t, err)
	assert.Empty(t, got, "a failed seed stored %d keys", len(got))
}

// TestLookupAttack_DeleteOfNothingGrowsBucket: a delete of a key a
// lookup does not hold writes nothing, so deletes alone do not grow the
// bucket.
func TestLookupAttack_DeleteOfNothingGrowsBucket(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t, Config{})
	for i := 0; i < 200; i++ {
		require.NoError(t, s.Delete(t.Context(), "any", fmt.Sprintf("never-set-%d", i)))
	}
	st, err := s.kv.Status(t.Context())
	require.NoError(t, err)
	assert.Zero(t, st.Values(), "deletes of keys never set left %d messages (%d bytes) in the bucket",
		st.Values(), st.(*jetstream.KeyValueBucketStatus).Bytes())
}
