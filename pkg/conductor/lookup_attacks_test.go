package conductor_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/lookup"
)

// TestLookupAttack_LookupReach: no credential, a submitter, and a host
// naming another host's caller subject reach no lookup.
func TestLookupAttack_LookupReach(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	sp, _ := subject.New("default")
	ctxT := func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	if nc, err := nats.Connect(rc.c.NATSURL(), nats.MaxReconnects(0)); err == nil {
		t.Cleanup(nc.Close)
		_, _, err = lookup.NewClient(nc, sp.LookupService()).Get(ctxT(), "cfg", "mode")
		assert.Error(t, err, "no credential reaches the lookups")
	}
	web, _ := rc.connectAs(t, "web")
	_, err := lookup.NewClient(web, sp.LookupCallers()[:len(sp.LookupCallers())-len("*.lookup")]+"h1.lookup").Set(ctxT(), "cfg", "mode", json.RawMessage(`1`))
	assert.Error(t, err, "a submitter on a host's caller subject")

	h1, _ := rc.connectAs(t, "h1")
	_, err = lookup.NewClient(h1, sp.LookupAs("h2")).Set(ctxT(), "cfg", "mode", json.RawMessage(`1`))
	assert.Error(t, err, "h1 posing as h2")
	_, err = lookup.NewClient(h1, sp.LookupService()).Set(ctxT(), "cfg", "mode", json.RawMessage(`1`))
	assert.NoError(t, err, "h1 as itself")
}

// TestLookupAttack_DeletedSeedComesBack: a seeded key an operator
// deleted stays deleted across a restart: a seed sets only a key the
// lookups never held.
func TestLookupAttack_DeletedSeedComesBack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func() *conductor.Conductor {
		c, err := conductor.New(conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0",
			Lookups: map[string]map[string]any{"cfg": {"legacy": "on"}}, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
		require.NoError(t, err)
		require.NoError(t, c.Start(context.Background()))
		return c
	}
	sp, _ := subject.New("default")
	c := start()
	nc := natsConn(t, c)
	require.NoError(t, lookup.NewClient(nc, sp.LookupService()).Delete(t.Context(), "cfg", "legacy"))
	nc.Close()
	c.Stop()

	c = start()
	t.Cleanup(c.Stop)
	nc = natsConn(t, c)
	var err error
	require.Eventually(t, func() bool {
		_, err = lookup.NewClient(nc, sp.LookupService()).Keys(t.Context(), "cfg")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "%v", err)
	v, _, err := lookup.NewClient(nc, sp.LookupService()).Get(t.Context(), "cfg", "legacy")
	assert.ErrorIs(t, err, lookup.ErrNotFound, "the operator's delete was undone by the restart: %s", v)
}

// TestLookupAttack_HTTPReachesEveryKey: a key is the rest of an HTTP
// path, which the server cleans; a key with an empty, "." or ".." part
// between slashes, which HTTP could never reach, is refused on every way
// in, and a key with slashes otherwise is reached and removed over HTTP.
func TestLookupAttack_HTTPReachesEveryKey(t *testing.T) {
	t.Parallel()
	rc := startClusterOf(t, conductor.Config{},
		auth.Credential{ID: "ops", Role: auth.Operator},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
	)
	srv := httptest.NewServer(rc.c.Handler())
	t.Cleanup(srv.Close)
	sp, _ := subject.New("default")
	h1, _ := rc.connectAs(t, "h1")
	lc := lookup.NewClient(h1, sp.LookupService())
	for _, key := range []string{"..", ".", "a//b", "a/./b", "a/../b", "/a", "a/"} {
		_, err := lc.Set(t.Context(), "odd", key, json.RawMessage(`1`))
		require.ErrorIs(t, err, lookup.ErrInvalid, key)
	}
	hdr := map[string]string{"Authorization": "Bearer " + rc.tokens["ops"]}
	for _, key := range []string{"a/b", "a/.b", "..a/b.."} {
		_, err := lc.Set(t.Context(), "odd", key, json.RawMessage(`1`))
		require.NoError(t, err, key)
		code, body := do(t, "GET", srv.URL, "/v1/lookups/odd/"+url.PathEscape(key), "", hdr)
		assert.Equal(t, http.StatusOK, code, "GET of key %q: %s", key, body)
		assert.Equal(t, "1", strings.TrimSpace(body), "GET of key %q answers its value", key)
		code, body = do(t, "DELETE", srv.URL, "/v1/lookups/odd/"+url.PathEscape(key), "", hdr)
		assert.Equal(t, http.StatusNoContent, code, "DELETE of key %q: %s", key, body)
	}
}

// TestLookupAttack_HTTPBadInput: oversized bodies, invalid UTF-8, keys
// past the bound and empty keys are refused with a 4xx that says why.
func TestLookupAttack_HTTPBadInput(t *testing.T) {
	t.Parallel()
	rc := startClusterOf(t, conductor.Config{}, auth.Credential{ID: "ops", Role: auth.Operator})
	srv := httptest.NewServer(rc.c.Handler())
	t.Cleanup(srv.Close)
	hdr := map[string]string{"Authorization": "Bearer " + rc.tokens["ops"]}
	for _, tc := range []struct {
		path, body string
		code       int
	}{
		{"/v1/lookups/n/k", `"` + strings.Repeat("x", 4*lookup.DefaultMaxValue+10) + `"`, http.StatusRequestEntityTooLarge},
		{"/v1/lookups/n/k", `"` + strings.Repeat("x", lookup.DefaultMaxValue) + `"`, http.StatusBadRequest},
		{"/v1/lookups/n/k", "\"\xff\"", http.StatusBadRequest},
		{"/v1/lookups/n/" + strings.Repeat("k", lookup.MaxKey+1), `1`, http.StatusBadRequest},
		{"/v1/lookups/n/" + url.PathEscape("\xff"), `1`, http.StatusBadRequest},
		{"/v1/lookups/n/", `1`, http.StatusBadRequest},
		{"/v1/lookups/" + strings.Repeat("n", lookup.MaxName+1) + "/k", `1`, http.StatusBadRequest},
	} {
		code, body := do(t, "PUT", srv.URL, tc.path, tc.body, hdr)
		assert.Equal(t, tc.code, code, "%.60s: %.200s", tc.path, body)
	}
	code, body := do(t, "PUT", srv.URL, "/v1/lookups/n/k", `1`, nil)
	assert.Equal(t, http.StatusUnauthorized, code, body)
}
