package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// lookupPool is the pool spec of one lookup worker serving type typ.
func lookupPool(typ string) string {
	return fmt.Sprintf("name=%s,count=1,cmd=%s", typ, filepath.Join(bin, "lookup-worker"))
}

// lookupJob runs a lookup-worker job of type typ doing payload, and
// returns its result.
func (c *cluster) lookupJob(typ, payload string) json.RawMessage {
	c.t.Helper()
	var j client.Job
	require.Equal(c.t, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/"+typ+"?wait=20s", payload, nil, &j), "job %s", payload)
	require.Equal(c.t, "succeeded", string(j.Status), "job %s: %s", payload, j.Error)
	return j.Result
}

// readsWithin runs lookup-worker job payload of type typ until its
// result is want, for at most limit: a write made elsewhere reaches a
// host's cache within the feed's transit, at most a beat (1 s) if its
// change was lost.
func (c *cluster) readsWithin(typ, payload, want string, limit time.Duration) {
	c.t.Helper()
	start := time.Now()
	var got json.RawMessage
	for {
		got = c.lookupJob(typ, payload)
		if jsonEqual(got, want) {
			return
		}
		if time.Since(start) > limit {
			c.t.Fatalf("%s on %s: %s after %v, want %s", payload, typ, got, limit, want)
		}
	}
}

func jsonEqual(a json.RawMessage, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && reflect.DeepEqual(x, y)
}

// Workers on two hosts read and write the same lookups, and so does
// HTTP; a host's cache of them follows every write; the lookups survive
// a restart of conductord.
func TestLookups_WorkersOnTwoHosts(t *testing.T) {
	c := newCluster(t)
	c.workerd("host-a", lookupPool("lookups-a"))
	c.workerd("host-b", lookupPool("lookups-b"))
	c.waitWorkers("lookups-a", 1)
	c.waitWorkers("lookups-b", 1)

	getUSD := `{"do":"get","name":"rates","key":"usd"}`
	require.JSONEq(t, `{"missing":true}`, string(c.lookupJob("lookups-b", getUSD)))
	require.JSONEq(t, `{"missing":true}`, string(c.lookupJob("lookups-b", getUSD)), "from host-b's cache")
	require.JSONEq(t, `{}`, string(c.lookupJob("lookups-a", `{"do":"set","name":"rates","key":"usd","value":{"rate":1.1}}`)))
	require.JSONEq(t, `{"value":{"rate":1.1}}`, string(c.lookupJob("lookups-a", getUSD)), "host-a reads its own write at once")
	c.readsWithin("lookups-b", getUSD, `{"value":{"rate":1.1}}`, time.Second) // host-b's cache follows host-a's write
	require.JSONEq(t, `{"value":{"rate":1.1}}`, string(c.lookupJob("lookups-b", getUSD)))
	var got json.RawMessage
	require.Equal(t, http.StatusOK, c.do(http.MethodGet, "/v1/lookups/rates/usd", "", nil, &got))
	require.JSONEq(t, `{"rate":1.1}`, string(got))

	require.Equal(t, http.StatusNoContent, c.do(http.MethodPut, "/v1/lookups/rates/eur", `0.9`, nil, nil))
	c.readsWithin("lookups-a", `{"do":"get","name":"rates","key":"eur"}`, `{"value":0.9}`, time.Second) // host-a reads the HTTP write
	require.JSONEq(t, `{"keys":["eur","usd"]}`, string(c.lookupJob("lookups-b", `{"do":"keys","name":"rates"}`)))
	require.JSONEq(t, `{}`, string(c.lookupJob("lookups-b", `{"do":"del","name":"rates","key":"eur"}`)))
	c.readsWithin("lookups-a", `{"do":"get","name":"rates","key":"eur"}`, `{"missing":true}`, time.Second) // host-a sees host-b's delete

	// A refused key fails the job for good, with the reason.
	var j client.Job
	require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/lookups-a?wait=20s", `{"do":"set","name":"rates","key":"a//b","value":1}`, nil, &j))
	require.Equal(t, "dead", string(j.Status))
	require.Contains(t, j.Error, "(400)")
	require.Contains(t, j.Error, "part between slashes")

	require.NoError(t, c.conductor.cmd.Process.Kill())
	<-c.conductor.exited
	c.startConductor()
	require.JSONEq(t, `{"keys":["usd"]}`, string(c.lookupJob("lookups-a", `{"do":"keys","name":"rates"}`)), "kept across the restart")
	require.Equal(t, http.StatusOK, c.do(http.MethodGet, "/v1/lookups/rates/usd", "", nil, &got))
	require.JSONEq(t, `{"rate":1.1}`, string(got))
	require.Equal(t, http.StatusNoContent, c.do(http.MethodPut, "/v1/lookups/rates/usd", `{"rate":1.3}`, nil, nil))
	// The hosts' caches start over with the new conductord: none
	// answers the value from before its restart.
	c.readsWithin("lookups-b", getUSD, `{"value":{"rate":1.3}}`, time.Second)
	c.readsWithin("lookups-a", getUSD, `{"value":{"rate":1.3}}`, time.Second)

	// The hosts' lookups that conductord answered, in /metrics.
	require.Eventually(t, func() bool {
		resp, err := http.Get(c.url("/metrics"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "conductor_lookup_seconds_count ")
	}, 10*time.Second, 50*time.Millisecond, "conductor_lookup_seconds in /metrics")
}

// Hosts on credentials of their own (each in a NATS account of its
// own) read and write the lookups too, through the imports conductord
// gives them; an admin sees their writes over HTTP.
func TestLookups_HostsOnTheirOwnCredentials(t *testing.T) {
	c := newCredCluster(t, nil)
	admin := c.issue("root", "admin")
	files := map[string]string{
		"h1": c.issueTo("h1", "host", "--types", "lookups-a"),
		"h2": c.issueTo("h2", "host", "--types", "lookups-b"),
	}
	c.start()
	for host, typ := range map[string]string{"h1": "lookups-a", "h2": "lookups-b"} {
		start(t, "workerd", "--conductor", c.natsURL(), "--host-id", host, "--token-file", files[host], "--pool", lookupPool(typ))
	}
	run := func(typ, payload string) string {
		t.Helper()
		var j client.Job
		code, body := c.do(admin, http.MethodPost, "/v1/jobs/"+typ+"?wait=30s", payload, &j)
		require.Equal(t, http.StatusOK, code, body)
		require.Equal(t, "succeeded", string(j.Status), body)
		return string(j.Result)
	}
	require.JSONEq(t, `{}`, run("lookups-a", `{"do":"set","name":"flags","key":"beta","value":true}`))
	require.JSONEq(t, `{"value":true}`, run("lookups-b", `{"do":"get","name":"flags","key":"beta"}`), "h2 reads h1's write")
	code, body := c.do(admin, http.MethodGet, "/v1/lookups/flags/beta", "", nil)
	require.Equal(t, http.StatusOK, code, body)
	require.JSONEq(t, `true`, body)
}
