package conductor_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// Review 18: attacks on the election of one leader among the conductords
// of a namespace (leader.go).

// attack18Start starts a conductor with cfg on the NATS at url, on a data
// directory holding conductord.id id when id is not empty.
func attack18Start(t *testing.T, url, id string, cfg conductor.Config) *conductor.Conductor {
	t.Helper()
	dir := t.TempDir()
	if id != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "conductord.id"), []byte(id+"\n"), 0o640))
	}
	cfg.NATSURL, cfg.DataDir = url, dir
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	return c
}

// attack18NeverTwoLeaders fails if a and b both lead at one moment within
// d.
func attack18NeverTwoLeaders(t *testing.T, d time.Duration, a, b *conductor.Conductor) {
	t.Helper()
	require.Never(t, func() bool { return a.Leader().Leading && b.Leader().Leading }, d, time.Millisecond,
		"two conductords lead at once: a %+v, b %+v", a.Leader(), b.Leader())
}

// TestAttack18_Leader_SameIDTwoLeaders: two conductords whose data
// directories hold the same conductord.id (a data directory restored from
// one snapshot or image onto two machines, a volume cloned by a
// StatefulSet, a copied configuration) must not both lead.
//
// FOUND by the outside attack, fixed since (high): what was wrong: step() treats a lease held under its own id as "its
// own, from before a restart" and takes it back at once with an update at
// the holder's revision. Two live conductords with one id therefore
// depose each other in turn, each renewal of one a conflict for the
// other, and both lead (take ends, repair strays, serve the hosts'
// cancels, publish roll-ups) for up to a third of a lease at each turn,
// for ever. Fix: make the lease's value unique per process (the id plus a
// nonce drawn at each start), take a lease back at once only when the
// value is the one this process last wrote before a restart (kept in the
// data directory next to the id, with its revision), and refuse to start
// (or pick a fresh id) when a live member key with the same id is found
// (member keys written with a create, renewed with an update at their
// revision, would detect the twin).
func TestAttack18_Leader_SameIDTwoLeaders(t *testing.T) {
	t.Parallel()
	url := natstest.Server(t).ClientURL()
	cfg := conductor.Config{LeaderLease: 300 * time.Millisecond}
	a := attack18Start(t, url, "twin-1", cfg)
	b := attack18Start(t, url, "twin-1", cfg)
	attack18NeverTwoLeaders(t, 3*time.Second, a, b)
}

// TestAttack18_Leader_LeaseMismatchTwoLeaders: a conductord started with a
// shorter --leader-lease than the leader's (a rolling change of the flag,
// or a typo on one machine) must not make two leaders.
//
// FOUND by the outside attack, fixed since (high): what was wrong: every conductord calls CreateOrUpdateKeyValue on the
// leader bucket with TTL = its own lease (ensureBucket), so the last one
// started sets the bucket's TTL for all. A leader with lease 6s renews
// every 2s and steps down only 4s after its last renewal; with the TTL
// cut to 300ms by the newcomer its key expires between renewals, the
// newcomer creates it, and both lead until the old leader's next renewal
// fails. Config.LeaderLease says "every conductord of a namespace must
// have the same" but nothing checks it. Fix: do not update the leader
// bucket's TTL of an existing bucket; read it and refuse to start (or
// adopt it as the lease) when it differs from Config.LeaderLease, and
// write the lease into the leader key's value so a leader can check it.
func TestAttack18_Leader_LeaseMismatchTwoLeaders(t *testing.T) {
	t.Parallel()
	url := natstest.Server(t).ClientURL()
	a := attack18Start(t, url, "", conductor.Config{LeaderLease: 6 * time.Second})
	require.Eventually(t, func() bool { return a.Leader().Leading }, 5*time.Second, 5*time.Millisecond, "the first leads")
	b := attack18Start(t, url, "", conductor.Config{LeaderLease: 300 * time.Millisecond})
	attack18NeverTwoLeaders(t, 5*time.Second, a, b)
}

// TestAttack18_Leader_LeaseBounds: the lease's bounds are enforced at
// New, each just outside refused and each bound itself taken.
func TestAttack18_Leader_LeaseBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		lease time.Duration
		ok    bool
	}{
		{conductor.MinLeaderLease - time.Nanosecond, false},
		{conductor.MaxLeaderLease + time.Nanosecond, false},
		{-conductor.DefaultLeaderLease, false},
		{conductor.MinLeaderLease, true},
		{conductor.MaxLeaderLease, true},
		{0, true}, // the default
	} {
		_, err := conductor.New(conductor.Config{LeaderLease: tc.lease, DataDir: t.TempDir(), MemoryStorage: true})
		if tc.ok {
			require.NoError(t, err, "lease %s", tc.lease)
		} else {
			require.ErrorContains(t, err, "--leader-lease", "lease %s", tc.lease)
		}
	}
}

// TestAttack18_Leader_BucketAndPeersRefused: no credential but an admin's
// may write the leader bucket (a forged leader key or member keys: a
// conductord deposed, two leaders, peers() inflated so that every
// archive read waits for members that never answer), touch its stream
// through the JetStream API, or take part in the conductords' archive
// questions (hear them, or ask them).
func TestAttack18_Leader_BucketAndPeersRefused(t *testing.T) {
	t.Parallel()
	rc := startClusterOf(t, conductor.Config{},
		auth.Credential{ID: "root", Role: auth.Admin},
		auth.Credential{ID: "ops", Role: auth.Operator},
		auth.Credential{ID: "web", Role: auth.Submitter, Types: []string{"squares"}},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
		auth.Credential{ID: "h2", Role: auth.Host},
	)
	const (
		bucket = "conductor-default-leader"
		stream = "KV_" + bucket
		peers  = "conductor.default.archive.peers"
	)
	for _, id := range []string{"ops", "web", "h1", "h2"} {
		for _, subj := range []string{
			"$KV." + bucket + ".leader",
			"$KV." + bucket + ".member.forged-1",
			"$JS.API.STREAM.PURGE." + stream,
			"$JS.API.STREAM.MSG.DELETE." + stream,
			"$JS.API.STREAM.UPDATE." + stream,
			"$JS.API.STREAM.DELETE." + stream,
			"$JS.API.CONSUMER.CREATE." + stream,
			peers,
		} {
			t.Run(id+"/pub/"+subj, func(t *testing.T) { refusedPub(t, rc, id, subj) })
		}
		t.Run(id+"/sub/"+peers, func(t *testing.T) { refusedSub(t, rc, id, peers) })
		t.Run(id+"/sub/$KV.leader", func(t *testing.T) { refusedSub(t, rc, id, "$KV."+bucket+".>") })
	}
}
