package conductor_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// A host announces the ends of its jobs on the ends stream, under its
// own credential's name; conductord archives the final states and tells
// the batch watcher and the Client's waits. The attacks below, of an
// outside review, forge such ends; each is now refused: a host's final
// state must be one the store holds.

// startArchivingCluster is startRoleCluster's credentials, with type
// other's submitter web2, and final states archived after a second
// (ArchiveAfter): a job's read goes to the archive soon after it ends.
func startArchivingCluster(t *testing.T) *roleCluster {
	t.Helper()
	return startClusterOf(t, conductor.Config{ArchiveAfter: time.Second},
		auth.Credential{ID: "root", Role: auth.Admin},
		auth.Credential{ID: "web2", Role: auth.Submitter, Types: []string{"other"}},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
	)
}

// publishEnds publishes ends on h1's ends subject of type squares, as
// h1, and waits for the ends stream to store them.
func publishEnds(t *testing.T, rc *roleCluster, ends wire.Ends) {
	t.Helper()
	sp, _ := subject.New("default")
	h1, _ := rc.connectAs(t, "h1")
	m, err := h1.Request(sp.JobEnds("squares"), ends.AppendJSON(nil), 5*time.Second)
	require.NoError(t, err, "h1 publishes on its own ends subject")
	require.Contains(t, string(m.Data), `"seq"`, "the ends stream stored h1's ends: %s", m.Data)
}

// archived reports whether the archive holds a record of job id, and
// returns it.
func archived(t *testing.T, nc *nats.Conn, id string) ([]byte, bool) {
	t.Helper()
	r, err := nc.Request("conductor.default.archive.get", []byte(id), 5*time.Second)
	ok := err == nil && r.Header.Get(names.HeaderStatus) == "" && len(r.Data) > 0
	if !ok {
		return nil, false
	}
	return r.Data, true
}

// waitHonestEnd runs a job of squares on a real host h1 and waits until
// its end is archived: ends are taken in order, so those h1 published
// before were taken (or refused) by then.
func waitHonestEnd(t *testing.T, rc *roleCluster) {
	t.Helper()
	startHost(t, rc, "h1", "squares")
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	honest, err := rootc.Submit(t.Context(), "squares", 3)
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, ok := archived(t, root, honest); return ok }, 20*time.Second, 20*time.Millisecond,
		"the end of a job h1 ran is archived")
}

// forgedState is a final state of job id whose "type" is given twice:
// squares first, as a check of the state's head reads it, then other,
// which Go's decoder keeps.
func forgedState(id string) json.RawMessage {
	return json.RawMessage(`{"id":"` + id + `","type":"squares","type":"other","status":"succeeded","attempts":1,"result":666}`)
}

// TestHostEnds_AnotherTypesStateNotArchived: a job of type other is
// cancelled, its final state archived and gone from the state bucket, so
// that its reads go to the archive (its newest record). h1, a host of
// squares only, announces on its own ends subject an end of that job,
// "succeeded" with its own result, in a state whose "type" reads squares
// first and other last. The state is not one the store holds: it is not
// archived, and the job reads "cancelled" to the admin, to its type's
// submitter and in the archive.
func TestHostEnds_AnotherTypesStateNotArchived(t *testing.T) {
	t.Parallel()
	rc := startArchivingCluster(t)
	sp, _ := subject.New("default")
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	id, err := rootc.Submit(t.Context(), "other", 7)
	require.NoError(t, err)
	_, err = rootc.Cancel(t.Context(), id)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, ok := archived(t, root, id)
		return ok && stateGone(t, rc, sp, id)
	}, 15*time.Second, 50*time.Millisecond, "the cancelled state is archived and gone from the bucket")

	publishEnds(t, rc, wire.Ends{Type: "squares", Jobs: []wire.End{{ID: id, Status: wire.StatusSucceeded, State: forgedState(id)}}})
	waitHonestEnd(t, rc)

	rec, ok := archived(t, root, id)
	require.True(t, ok)
	var a client.Job
	require.NoError(t, json.Unmarshal(rec, &a))
	require.Equal(t, client.StatusCancelled, a.Status, "h1 (squares) archived a state of another type's job: %s", rec)
	j, err := rootc.Job(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, client.StatusCancelled, j.Status, "the admin reads h1's forged end of a job of type other")
	web2, _ := rc.connectAs(t, "web2")
	sc, err := client.New(web2, client.Config{Submitter: true})
	require.NoError(t, err)
	sj, err := sc.Job(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, client.StatusCancelled, sj.Status, "other's submitter reads h1's forged end")
	require.Empty(t, sj.Result)
}

// stateGone reports whether job id has no state in the bucket any more.
func stateGone(t *testing.T, rc *roleCluster, sp subject.Space, id string) bool {
	t.Helper()
	root, _ := rc.connectAs(t, "root")
	defer root.Close()
	m, err := root.Request("$JS.API.DIRECT.GET.KV_"+sp.StateBucket(), []byte(`{"last_by_subj":"$KV.`+sp.StateBucket()+`.`+id+`"}`), 2*time.Second)
	return err == nil && len(m.Data) == 0 && m.Header.Get("Status") != ""
}

// TestHostEnds_IdempotentIDNotSquatted: the attack
// TestRoles_HostTakesNoIdOfAnotherType refuses through the store, made
// through the ends. h1 (squares) computes the id that type other's job
// with key "order-42" will have and announces a "succeeded" end of it. A
// state the store never wrote is not archived: the real submission of
// type other with that key queues the job, rather than find it ended.
func TestHostEnds_IdempotentIDNotSquatted(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	id := client.IdempotentID("default", "other", "order-42")
	publishEnds(t, rc, wire.Ends{Type: "squares", Jobs: []wire.End{{ID: id, Status: wire.StatusSucceeded, State: forgedState(id)}}})
	waitHonestEnd(t, rc)

	root, _ := rc.connectAs(t, "root")
	_, ok := archived(t, root, id)
	require.False(t, ok, "h1's forged end of another type's idempotent job was archived")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	got, err := rootc.Submit(t.Context(), "other", 1, client.WithIdempotencyKey("order-42"))
	require.NoError(t, err)
	require.Equal(t, id, got)
	j, err := rootc.Job(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, j.Status, "h1's forged end took the id of another type's idempotent job: it was never queued")
}

// TestHostEnds_MadeUpBatchesNotHeld: an end names its job's batch, which
// conductord's batch watcher then follows. h1 (squares) announces 12,000
// final ends of made-up jobs, each of a made-up batch (more than the
// 10,000 foreign batches the watcher would keep), with no state or with
// a state the store never wrote. None is a state the store holds: all
// are refused, and conductord holds no batch for them (were they taken,
// TestBatchEnds_ForeignBounded bounds what the watcher keeps).
func TestHostEnds_MadeUpBatchesNotHeld(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	before := conductor.BatchesHeld(rc.c)
	const msgs, each = 2, 6_000
	for i := range msgs {
		ends := wire.Ends{Type: "squares"}
		for j := range each {
			e := wire.End{ID: fmt.Sprintf("j%d-%d", i, j), Status: wire.StatusSucceeded, Batch: uuid.NewString()}
			if j%2 == 1 {
				e.State = json.RawMessage(`{"id":"` + e.ID + `","type":"squares","status":"succeeded","attempts":1}`)
			}
			ends.Jobs = append(ends.Jobs, e)
		}
		publishEnds(t, rc, ends)
	}
	waitHonestEnd(t, rc)
	held := conductor.BatchesHeld(rc.c)
	require.Equal(t, before, held, "h1's forged ends of made-up batches made conductord hold %d batches", held-before)
}
