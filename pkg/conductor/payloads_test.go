package conductor_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// bigAnswer is testHandler's result for a large payload s: its length
// and digest.
func bigAnswer(s string) map[string]any {
	sum := sha256.Sum256([]byte(s))
	return map[string]any{"len": len(s), "sha": hex.EncodeToString(sum[:])}
}

// bigPayload is a JSON string of about n bytes that starts with prefix,
// and the answer testHandler gives for it.
func bigPayload(prefix string, n int) ([]byte, string) {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 1))
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	s := prefix + string(b)
	want, _ := json.Marshal(bigAnswer(s))
	data, _ := json.Marshal(s)
	return data, string(want)
}

// payloadObjects counts the messages of the payload bucket's stream: 0
// once every object is removed (payloads.Delete leaves no marker).
func payloadObjects(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), payloads.StreamName("conductor-default-payloads"))
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.Msgs
}

func waitNoObjects(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	require.Eventually(t, func() bool { return payloadObjects(t, js) == 0 }, 20*time.Second, 20*time.Millisecond,
		"the objects of the jobs that succeeded are removed")
}

// Payloads over the inline limit go by reference, whichever way they are
// submitted (HTTP, NATS request, the Go client), reach the worker whole,
// and their objects are removed once their jobs succeed. A small payload
// stores nothing in the bucket.
func TestPayloads_LargeGoByReference(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{InlinePayload: 64 << 10, MaxPayload: 4 << 20})
	startAgent(t, bundle, "squares")
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)

	data, want := bigPayload("big:", 3<<20)
	resp, err := http.Post(srv.URL+"/v1/jobs/squares?wait=30s", "application/json", bytes.NewReader(data))
	require.NoError(t, err)
	var j client.Job
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&j))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, client.StatusSucceeded, j.Status, j.Error)
	require.JSONEq(t, want, string(j.Result))
	require.NotNil(t, j.PayloadRef, "its state names the object")
	require.Equal(t, int64(len(data)), j.PayloadRef.Size)

	data, want = bigPayload("big:", 1<<20)
	sp, _ := subject.New("default")
	m := nats.NewMsg(sp.Submit("squares"))
	m.Data = data
	r, err := bundle.nc.RequestMsg(m, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, "200", r.Header.Get(names.HeaderStatus), string(r.Data))
	require.NoError(t, json.Unmarshal(r.Data, &j))
	require.JSONEq(t, want, string(j.Result))

	data, want = bigPayload("big:", 200<<10)
	done, err := c.Client().SubmitAndWait(t.Context(), "squares", json.RawMessage(data))
	require.NoError(t, err)
	require.JSONEq(t, want, string(done.Result))

	small, err := c.Client().SubmitAndWait(t.Context(), "squares", 7)
	require.NoError(t, err)
	require.Nil(t, small.PayloadRef)
	waitNoObjects(t, bundle.js)
}

// A payload over the limit is refused, 413 over HTTP, before any of it is
// stored; a Submitter's payload over NATS's max_payload is refused by the
// client, naming HTTP.
func TestPayloads_OverTheLimitIsRefused(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{InlinePayload: 64 << 10, MaxPayload: 1 << 20})
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	data, _ := bigPayload("big:", 1<<20)
	resp, err := http.Post(srv.URL+"/v1/jobs/squares", "application/json", bytes.NewReader(data))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	_, err = c.Client().Submit(t.Context(), "squares", json.RawMessage(data))
	var tooLarge *client.PayloadTooLargeError
	require.ErrorAs(t, err, &tooLarge)
	require.Zero(t, payloadObjects(t, bundle.js))

	sub, err := client.New(bundle.nc, client.Config{Submitter: true, MaxPayload: 64 << 20})
	require.NoError(t, err)
	huge, _ := bigPayload("big:", int(bundle.nc.MaxPayload()))
	_, err = sub.Submit(t.Context(), "squares", json.RawMessage(huge))
	require.ErrorAs(t, err, &tooLarge)
	require.Contains(t, err.Error(), "submit it over HTTP")
}

// A job that dies keeps its payload's object and shows its reference; it
// runs again, payload and all, once queued again, and its object goes
// once it succeeds.
func TestPayloads_DeadKeepsItsObjectUntilRequeued(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{InlinePayload: 64 << 10})
	startAgent(t, bundle, "squares")
	ok := filepath.Join(t.TempDir(), "ok")
	data, want := bigPayload("bigfail:"+ok+":", 300<<10)
	dead, err := c.Client().SubmitAndWait(t.Context(), "squares", json.RawMessage(data))
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, dead.Status)
	require.NotNil(t, dead.PayloadRef)
	require.Empty(t, dead.Payload, "the state keeps the reference, not the bytes")
	require.NotZero(t, payloadObjects(t, bundle.js), "a dead job's object is kept")

	require.NoError(t, os.WriteFile(ok, nil, 0o600))
	_, err = c.Client().Requeue(t.Context(), dead.ID)
	require.NoError(t, err)
	done, err := c.Client().Wait(t.Context(), dead.ID)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, done.Status, done.Error)
	require.JSONEq(t, want, string(done.Result))
	waitNoObjects(t, bundle.js)
}

// A job whose object has gone cannot run: it ends dead at once, saying
// why, rather than running with no payload or being retried for ever.
func TestPayloads_GoneObjectEndsTheJobDead(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{InlinePayload: 64 << 10})
	data, _ := bigPayload("big:", 100<<10)
	id, err := c.Client().Submit(t.Context(), "squares", json.RawMessage(data))
	require.NoError(t, err)
	s, err := bundle.js.Stream(t.Context(), payloads.StreamName("conductor-default-payloads"))
	require.NoError(t, err)
	require.NoError(t, s.Purge(t.Context()))

	startAgent(t, bundle, "squares")
	j, err := c.Client().Wait(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, j.Status)
	require.Contains(t, j.Error, "not in the payload bucket")
	require.Equal(t, 1, j.Attempts)
}

// A job published directly whose payload headers name no object that can
// be read ends dead, naming the header; it does not run with an empty
// payload.
func TestPayloads_BadReferenceHeadersEndTheJobDead(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	startAgent(t, bundle, "squares")
	sp, _ := subject.New("default")
	m := nats.NewMsg(sp.JobAt("squares", ""))
	m.Header.Set(names.HeaderJobID, "bad-ref")
	m.Header.Set(names.HeaderPayloadObject, "someone-elses")
	m.Header.Set(names.HeaderPayloadSize, "lots")
	_, err := bundle.js.PublishMsg(t.Context(), m)
	require.NoError(t, err)
	var j *client.Job
	require.Eventually(t, func() bool {
		j, err = c.Client().Job(t.Context(), "bad-ref")
		return err == nil && j.Status.Final()
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, client.StatusDead, j.Status)
	require.Contains(t, j.Error, names.HeaderPayloadObject)
}

// A host with a credential of its own, which may read messages but not
// make consumers, reads payloads by reference too.
func TestPayloads_HostWithItsOwnCredentialReadsThem(t *testing.T) {
	t.Parallel()
	rc := startClusterOf(t, conductor.Config{InlinePayload: 64 << 10},
		auth.Credential{ID: "root", Role: auth.Admin},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
	)
	startHost(t, rc, "h1", "squares")
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	data, want := bigPayload("big:", 700<<10)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	j, err := rootc.SubmitAndWait(ctx, "squares", json.RawMessage(data))
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status, j.Error)
	require.JSONEq(t, want, string(j.Result))
	js, err := jetstream.New(root)
	require.NoError(t, err)
	waitNoObjects(t, js)
}

// A host with a credential of its own reads, through conductord, the
// payloads of its types' jobs only: an object of another type's job is
// refused (403), and the subject of another type is not its to ask on.
func TestPayloads_HostReadsItsTypesObjectsOnly(t *testing.T) {
	t.Parallel()
	rc := startClusterOf(t, conductor.Config{InlinePayload: 64 << 10},
		auth.Credential{ID: "root", Role: auth.Admin},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
	)
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	data, _ := bigPayload("big:", 100<<10)
	id, err := rootc.Submit(t.Context(), "other", json.RawMessage(data))
	require.NoError(t, err)
	js, err := jetstream.New(root)
	require.NoError(t, err)
	sp, _ := subject.New("default")
	jobs, err := js.Stream(t.Context(), sp.JobStream())
	require.NoError(t, err)
	m, err := jobs.GetLastMsgForSubject(t.Context(), sp.JobAt("other", ""))
	require.NoError(t, err)
	require.Equal(t, id, m.Header.Get(names.HeaderJobID))
	object := m.Header.Get(names.HeaderPayloadObject)
	require.NotEmpty(t, object, "the job's message names its payload's object")
	require.Empty(t, m.Data, "and carries none of it")

	h1, _ := rc.connectAs(t, "h1")
	for _, from := range []string{"", `,"from":1`} {
		r, err := h1.Request(sp.PayloadAs("h1", "squares"), []byte(`{"object":"`+object+`"`+from+`}`), 5*time.Second)
		require.NoError(t, err)
		require.Equal(t, "403", r.Header.Get(names.HeaderStatus), string(r.Data))
		require.Empty(t, r.Header.Get("Conductor-Payload-Seq"))
		require.NotContains(t, string(r.Data), "big:", "no byte of the payload")
	}
	_, err = h1.Request(sp.PayloadAs("h1", "other"), []byte(`{"object":"`+object+`"}`), time.Second)
	require.Error(t, err, "h1 may not ask on another type's subject")
}

// The leader's sweep of the payload bucket removes the objects whose
// jobs have ended for good that no end named (conductord was down, its
// queue full, a removal failed), and keeps those of dead and waiting
// jobs, those not named for a job, and those stored lately.
func TestPayloads_SweepRemovesWhatTheEndsMissed(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	startAgent(t, bundle, "squares")
	ctx := t.Context()
	obs, err := bundle.js.ObjectStore(ctx, "conductor-default-payloads")
	require.NoError(t, err)
	succeeded, err := c.Client().SubmitAndWait(ctx, "squares", 3)
	require.NoError(t, err)
	dead, err := c.Client().SubmitAndWait(ctx, "squares", "fail")
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, dead.Status)
	waiting, err := c.Client().Submit(ctx, "unserved", 1)
	require.NoError(t, err)
	data, _ := bigPayload("big:", 1000)
	for _, id := range []string{succeeded.ID, dead.ID, waiting} {
		_, err := payloads.Put(ctx, payloads.NewBucket(bundle.js, "conductor-default-payloads"), "squares", id, data)
		require.NoError(t, err)
	}
	_, err = obs.PutBytes(ctx, "not-named-for-a-job", data)
	require.NoError(t, err)

	require.Zero(t, conductor.SweepPayloads(c, time.Now().Add(-time.Hour)), "objects stored lately are left")
	require.Equal(t, 1, conductor.SweepPayloads(c, time.Now().Add(time.Minute)), "the succeeded job's object")
	left, err := obs.List(ctx)
	require.NoError(t, err)
	var names []string
	for _, o := range left {
		names = append(names, o.Name)
	}
	require.Len(t, names, 3, "%v", names)
	for _, name := range names {
		require.NotContains(t, name, succeeded.ID)
	}
}
