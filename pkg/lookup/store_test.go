package lookup

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
)

func openStore(t *testing.T, cfg Config) (*Store, jetstream.JetStream) {
	t.Helper()
	ns := natstest.Server(t)
	js, err := jetstream.New(natstest.Conn(t, ns))
	require.NoError(t, err)
	if cfg.Bucket == "" {
		cfg.Bucket = "conductor-default-lookups"
	}
	s, err := Open(t.Context(), js, cfg)
	require.NoError(t, err)
	return s, js
}

// TestStore: a value set is read back compact, keys of any UTF-8 (stored
// encoded when the bucket does not take them as they are) come back as
// written, a lookup lists its keys only, a delete leaves none.
func TestStore(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t, Config{})
	ctx := t.Context()
	keys := []string{"sku-42", "a.b.c", "user:7", "with space", "=starts", ".dot", "ünïcode", "a/b", strings.Repeat("k", MaxKey)}
	for i, k := range keys {
		_, err := s.Set(ctx, "prices", k, json.RawMessage(fmt.Sprintf(`{ "n" : %d }`, i)))
		require.NoError(t, err, k)
	}
	_, err := s.Set(ctx, "other", "sku-42", json.RawMessage(`"x"`))
	require.NoError(t, err)
	for i, k := range keys {
		v, rev, err := s.Get(ctx, "prices", k)
		require.NoError(t, err, k)
		assert.Equal(t, fmt.Sprintf(`{"n":%d}`, i), string(v), k)
		assert.NotZero(t, rev)
	}
	got, err := s.Keys(ctx, "prices")
	require.NoError(t, err)
	assert.ElementsMatch(t, keys, got)

	require.NoError(t, s.Delete(ctx, "prices", "user:7"))
	require.NoError(t, s.Delete(ctx, "prices", "never-set"), "deleting what is not there")
	_, _, err = s.Get(ctx, "prices", "user:7")
	require.ErrorIs(t, err, ErrNotFound)
	_, _, err = s.Get(ctx, "nothing", "k")
	require.ErrorIs(t, err, ErrNotFound)
	got, err = s.Keys(ctx, "nothing")
	require.NoError(t, err)
	assert.Empty(t, got)
}

// TestStore_BadInput: every name, key and value refused says why, and
// nothing is stored.
func TestStore_BadInput(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t, Config{MaxValue: 100})
	ctx := t.Context()
	for _, tc := range []struct {
		name, key, value, err string
	}{
		{name: "", key: "k", value: `1`, err: "name"},
		{name: strings.Repeat("n", MaxName+1), key: "k", value: `1`, err: "name"},
		{name: "a.b", key: "k", value: `1`, err: "letters, digits"},
		{name: "a*", key: "k", value: `1`, err: "letters, digits"},
		{name: "n", key: "", value: `1`, err: "key"},
		{name: "n", key: strings.Repeat("k", MaxKey+1), value: `1`, err: "key"},
		{name: "n", key: "bad\xff", value: `1`, err: "UTF-8"},
		{name: "n", key: "k", value: `{`, err: "not JSON"},
		{name: "n", key: "k", value: ``, err: "not JSON"},
		{name: "n", key: "k", value: `"` + strings.Repeat("x", 100) + `"`, err: "more than 100"},
		{name: "n", key: "k", value: "\"a\xffb\"", err: "UTF-8"},
	} {
		_, err := s.Set(ctx, tc.name, tc.key, json.RawMessage(tc.value))
		require.ErrorIs(t, err, ErrInvalid, "%+v", tc)
		require.ErrorContains(t, err, tc.err, "%+v", tc)
	}
	_, _, err := s.Get(ctx, "n", "k")
	require.ErrorIs(t, err, ErrNotFound, "nothing stored")
	_, err = s.Keys(ctx, "a.b")
	require.ErrorIs(t, err, ErrInvalid)
}

// TestStore_KeysBounded: a lookup past MaxKeys is refused by Keys with
// ErrTooMany, not listed in full.
func TestStore_KeysBounded(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t, Config{MaxKeys: 5})
	for i := range 6 {
		_, err := s.Set(t.Context(), "big", fmt.Sprint("k", i), json.RawMessage(`1`))
		require.NoError(t, err)
	}
	_, err := s.Keys(t.Context(), "big")
	require.ErrorIs(t, err, ErrTooMany)
}

// TestStore_SurvivesReopen: what is set is there for a Store opened again
// on the bucket (conductord's restart); seeds set only what is not there.
func TestStore_SurvivesReopen(t *testing.T) {
	t.Parallel()
	s, js := openStore(t, Config{})
	ctx := t.Context()
	_, err := s.Set(ctx, "cfg", "mode", json.RawMessage(`"fast"`))
	require.NoError(t, err)
	s2, err := Open(ctx, js, Config{Bucket: "conductor-default-lookups"})
	require.NoError(t, err)
	require.NoError(t, s2.Seed(ctx, map[string]map[string]any{"cfg": {"mode": "slow", "limit": 10}}))
	v, _, err := s2.Get(ctx, "cfg", "mode")
	require.NoError(t, err)
	assert.JSONEq(t, `"fast"`, string(v), "a seed keeps what was set since")
	v, _, err = s2.Get(ctx, "cfg", "limit")
	require.NoError(t, err)
	assert.JSONEq(t, `10`, string(v))

	file := filepath.Join(t.TempDir(), "seeds.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"flags": {"beta": true, "list": [1, 2]}}`), 0o600))
	require.NoError(t, s2.SeedFile(ctx, file))
	v, _, err = s2.Get(ctx, "flags", "list")
	require.NoError(t, err)
	assert.Equal(t, `[1,2]`, string(v))
	require.NoError(t, os.WriteFile(file, []byte(`{"flags": {"x": `), 0o600))
	require.Error(t, s2.SeedFile(ctx, file))
	require.ErrorIs(t, s2.Seed(ctx, map[string]map[string]any{"bad name": {"k": 1}}), ErrInvalid)
}

// TestStore_Watch: a watch sends every key held, says when they are all
// sent, then every change, deletes as a nil value, and ends with ctx.
func TestStore_Watch(t *testing.T) {
	t.Parallel()
	s, _ := openStore(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := s.Set(ctx, "prices", "a", json.RawMessage(`1`))
	require.NoError(t, err)
	_, err = s.Set(ctx, "other", "a", json.RawMessage(`9`))
	require.NoError(t, err)
	var once sync.Once
	loaded := make(chan struct{})
	changes, err := s.Watch(ctx, "prices", func() { once.Do(func() { close(loaded) }) })
	require.NoError(t, err)
	next := func() Change {
		select {
		case c, ok := <-changes:
			require.True(t, ok)
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("no change")
		}
		return Change{}
	}
	c := next()
	assert.Equal(t, "a", c.Key)
	assert.Equal(t, `1`, string(c.Value))
	select {
	case <-loaded:
	case <-time.After(10 * time.Second):
		t.Fatal("never loaded")
	}
	_, err = s.Set(ctx, "prices", "with space", json.RawMessage(`2`))
	require.NoError(t, err)
	c = next()
	assert.Equal(t, Change{Name: "prices", Key: "with space", Value: json.RawMessage(`2`), Revision: c.Revision}, c)
	require.NoError(t, s.Delete(ctx, "prices", "a"))
	c = next()
	assert.Equal(t, "a", c.Key)
	assert.Nil(t, c.Value, "a delete")
	cancel()
	require.Eventually(t, func() bool {
		select {
		case _, ok := <-changes:
			return !ok
		default:
			return false
		}
	}, 10*time.Second, 5*time.Millisecond, "the channel closes with ctx")
}

func TestSplitKey(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"a", "a.b", "=x", "x y", "ü", "a..b", "a.", ".a"} {
		name, key, ok := splitKey(storedKey("n", k))
		require.True(t, ok, k)
		assert.Equal(t, "n", name)
		assert.Equal(t, k, key)
	}
	for _, bad := range []string{"", "n", "n.", "bad name.k", "n.=!!"} {
		_, _, ok := splitKey(bad)
		assert.False(t, ok, bad)
	}
}
