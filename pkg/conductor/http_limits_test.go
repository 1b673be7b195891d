package conductor_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// requireCompactJSON checks that body is one line of valid UTF-8 JSON with
// no indentation.
func requireCompactJSON(t *testing.T, body string) {
	t.Helper()
	require.True(t, utf8.ValidString(body), "the answer is valid UTF-8")
	require.True(t, json.Valid([]byte(body)), "the answer is JSON")
	require.True(t, strings.HasSuffix(body, "\n"))
	require.NotContains(t, strings.TrimSuffix(body, "\n"), "\n", "one line")
	require.NotContains(t, body, ": ", "no space after a colon outside strings (none of these strings has one)")
}

// A worker's result nested deeper than the limit is refused when the worker
// answers (the job dead, the reason its error), and one that is not valid
// UTF-8 is stored made valid: every answer is compact, valid UTF-8 JSON.
// Before, the 18 KB result nested 9000 deep was stored, and
// GET /v1/jobs/{id} indented it into a 162 MB answer.
func TestConductor_WorkerResultsBounded(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	startAgent(t, bundle, "squares")

	code, body := post(t, srv, "/v1/jobs/squares?wait=1m", `"deep"`)
	require.Equal(t, http.StatusOK, code, body)
	requireCompactJSON(t, body)
	require.Less(t, len(body), 2000, "the answer holds the error, not the result")
	var j client.Job
	require.NoError(t, json.Unmarshal([]byte(body), &j))
	require.Equal(t, client.StatusDead, j.Status, "refused for good: no retry")
	require.Equal(t, "result nests 9000 levels deep, over the limit of 64 levels", j.Error)
	require.Empty(t, j.Result)
	code, got := get(t, srv, "/v1/jobs/"+j.ID)
	require.Equal(t, http.StatusOK, code)
	requireCompactJSON(t, got)
	require.Contains(t, got, `"error":"result nests 9000 levels deep, over the limit of 64 levels"`)

	code, body = post(t, srv, "/v1/jobs/squares?wait=1m", `"bad-utf8"`)
	require.Equal(t, http.StatusOK, code, body)
	requireCompactJSON(t, body)
	require.NoError(t, json.Unmarshal([]byte(body), &j))
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.JSONEq(t, `{"text":"a`+"\uFFFD"+`b`+"\uFFFD"+`"}`, string(j.Result), "invalid bytes replaced when stored")
	stored, err := c.Client().Job(context.Background(), j.ID)
	require.NoError(t, err)
	require.True(t, utf8.Valid(stored.Result), "stored valid: %q", stored.Result)
}

// A state written straight to the bucket (an older workerd's, or anyone's
// with the power to write there) is answered compact and valid UTF-8
// whatever it holds: an answer is as large as the state, and never breaks
// a strict JSON client.
func TestConductor_AnswersCompactValidJSON(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	space, err := subject.New("default")
	require.NoError(t, err)
	deep := strings.Repeat("[", 9000) + strings.Repeat("]", 9000)
	deepState := listState(1, "squares", client.StatusSucceeded)
	deepState.Result = json.RawMessage(deep)
	badState := listState(2, "squares", client.StatusDead)
	badState.Error = "boom"
	badState.Payload = json.RawMessage("\"\xff\xfe\"")
	badState.Result = json.RawMessage("[\"x\xc3\"]")
	putStates(t, bundle.js, space.StateBucket(), deepState, badState)

	code, body := get(t, srv, "/v1/jobs/j1")
	require.Equal(t, http.StatusOK, code)
	requireCompactJSON(t, body)
	require.Less(t, len(body), len(deep)+1000, "as large as the state: indented, it was 162 MB")

	code, body = get(t, srv, "/v1/jobs/j2")
	require.Equal(t, http.StatusOK, code)
	requireCompactJSON(t, body)
	require.Contains(t, body, `"result":["x`+"\uFFFD"+`"]`)
	require.Contains(t, body, `"payload":"`+"\uFFFD"+`"`)

	code, body = get(t, srv, "/v1/jobs?type=squares")
	require.Equal(t, http.StatusOK, code)
	requireCompactJSON(t, body)
	var jobs []client.Job
	require.NoError(t, json.Unmarshal([]byte(body), &jobs))
	require.Len(t, jobs, 2)

	code, body = get(t, srv, "/v1/jobs/nope")
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, `{"error":"no job nope"}`+"\n", body)
}

// A batch body over Config.MaxBatchBytes (--max-batch-bytes) is refused
// with 413 while it is read, and nothing is queued; one within it is
// queued.
func TestConductor_BatchBodyOverMaxBatchBytes(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{MaxBatchBytes: 1000})
	srv := serve(t, c)
	body := strings.Repeat("12345678\n", 200) // 1800 bytes of good lines
	code, got := post(t, srv, "/v1/batches/squares", body)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, got)
	require.Equal(t, `{"error":"body is over the limit of 1000 bytes (conductord --max-batch-bytes); nothing was queued: split it into several batches"}`+"\n", got)
	pools, err := c.Pools(context.Background())
	require.NoError(t, err)
	require.Empty(t, pools, "nothing queued")

	code, got = post(t, srv, "/v1/batches/squares", body[:999])
	require.Equal(t, http.StatusAccepted, code, got)
	requireCompactJSON(t, got)
	require.Contains(t, got, `"total":111`)
}

// A resize above Config.MaxPoolSize (--max-pool-size, default 1000) is
// refused by conductord with 400 and sent to no host.
func TestConductor_ResizeAboveMaxPoolSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		max  int
		ok   int
	}{
		{"default", 0, conductor.DefaultMaxPoolSize},
		{"configured", 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, bundle := setup(t, conductor.Config{MaxPoolSize: tc.max})
			srv := serve(t, c)
			host := startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares")})
			over := tc.ok + 1
			code, body := post(t, srv, "/v1/pools/squares/resize", `{"count":`+strconv.Itoa(over)+`}`)
			require.Equal(t, http.StatusBadRequest, code, body)
			require.Equal(t, `{"error":"conductor: bad pool command: count `+strconv.Itoa(over)+` is over the maximum pool size of `+strconv.Itoa(tc.ok)+
				` (conductord --max-pool-size)"}`+"\n", body)
			code, body = post(t, srv, "/v1/pools/squares/resize", `{"count":1000000000}`)
			require.Equal(t, http.StatusBadRequest, code, body)
			require.Empty(t, host.commands, "no host was sent the resize")

			code, body = post(t, srv, "/v1/pools/squares/resize", `{"count":`+strconv.Itoa(tc.ok)+`}`)
			require.Equal(t, http.StatusAccepted, code, body)
			require.Equal(t, wire.Command{Op: "resize", Pool: "squares", Count: tc.ok}, host.next(t))
		})
	}
}
