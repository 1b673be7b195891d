package conductor_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// TestLookups_HTTPAndNATS: the lookups set at start (Config.Lookups), over
// HTTP and over NATS are one set: what one way writes the other reads; a
// key with any characters goes in the path, escaped; bad input is a 400
// that says why; an operator and an admin may, a submitter and a host
// may not over HTTP (hosts use them over NATS, for their workers).
func TestLookups_HTTPAndNATS(t *testing.T) {
	t.Parallel()
	rc := startClusterOf(t, conductor.Config{Lookups: map[string]map[string]any{"cfg": {"mode": "fast"}}},
		auth.Credential{ID: "root", Role: auth.Admin},
		auth.Credential{ID: "ops", Role: auth.Operator},
		auth.Credential{ID: "web", Role: auth.Submitter, Types: []string{"squares"}},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
	)
	srv := httptest.NewServer(rc.c.Handler())
	t.Cleanup(srv.Close)
	call := func(who, method, path, body string) (int, string) {
		t.Helper()
		return do(t, method, srv.URL, path, body, map[string]string{"Authorization": "Bearer " + rc.tokens[who]})
	}

	code, body := call("ops", "GET", "/v1/lookups/cfg/mode", "")
	require.Equal(t, http.StatusOK, code, body)
	assert.JSONEq(t, `"fast"`, body, "seeded at start")
	key := "user:7/a b"
	code, body = call("ops", "PUT", "/v1/lookups/prices/"+url.PathEscape(key), `{ "eur" : 12.5 }`)
	require.Equal(t, http.StatusNoContent, code, body)

	sp, _ := subject.New("default")
	h1, _ := rc.connectAs(t, "h1")
	lc := lookup.NewClient(h1, sp.LookupService())
	v, _, err := lc.Get(t.Context(), "prices", key)
	require.NoError(t, err, "a host reads over NATS what an operator set over HTTP")
	assert.Equal(t, `{"eur":12.5}`, string(v))
	_, err = lc.Set(t.Context(), "prices", "sku-2", json.RawMessage(`3`))
	require.NoError(t, err)
	code, body = call("root", "GET", "/v1/lookups/prices", "")
	require.Equal(t, http.StatusOK, code, body)
	var keys struct{ Keys []string }
	require.NoError(t, json.Unmarshal([]byte(body), &keys))
	assert.ElementsMatch(t, []string{key, "sku-2"}, keys.Keys)

	code, body = call("ops", "DELETE", "/v1/lookups/prices/sku-2", "")
	require.Equal(t, http.StatusNoContent, code, body)
	code, _ = call("ops", "GET", "/v1/lookups/prices/sku-2", "")
	assert.Equal(t, http.StatusNotFound, code)
	code, body = call("ops", "PUT", "/v1/lookups/prices/k", `{`)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, body, "not JSON")
	code, body = call("ops", "PUT", "/v1/lookups/bad.name/k", `1`)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, body, "letters, digits")
	for _, who := range []string{"web", "h1"} {
		code, _ = call(who, "GET", "/v1/lookups/cfg/mode", "")
		assert.Equal(t, http.StatusForbidden, code, who)
	}
	web, _ := rc.connectAs(t, "web")
	_, _, err = lookup.NewClient(web, sp.LookupService()).Get(t.Context(), "cfg", "mode")
	require.Error(t, err, "a submitter has no lookups")
}

// TestLookups_SurviveRestart: what is set is there after conductord stops
// and starts again on its data; the seeds do not undo it.
func TestLookups_SurviveRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func() *conductor.Conductor {
		c, err := conductor.New(conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0",
			Lookups: map[string]map[string]any{"cfg": {"mode": "fast"}}, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
		require.NoError(t, err)
		require.NoError(t, c.Start(context.Background()))
		return c
	}
	c := start()
	sp, _ := subject.New("default")
	nc := natsConn(t, c)
	_, err := lookup.NewClient(nc, sp.LookupService()).Set(t.Context(), "cfg", "mode", json.RawMessage(`"slow"`))
	require.NoError(t, err)
	nc.Close()
	c.Stop()

	c = start()
	t.Cleanup(c.Stop)
	nc = natsConn(t, c)
	var v json.RawMessage
	require.Eventually(t, func() bool {
		v, _, err = lookup.NewClient(nc, sp.LookupService()).Get(t.Context(), "cfg", "mode")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the lookup service answers after the restart: %v", err)
	assert.JSONEq(t, `"slow"`, string(v), "the seed did not undo what was set")
}

// natsConn connects to c's NATS (no credentials), closed with the test.
func natsConn(t *testing.T, c *conductor.Conductor) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}
