package ctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// putJobs stores jobs in b's state bucket, as workerd would.
func (b *liveBundle) putJobs(t *testing.T, jobs ...wire.Job) {
	t.Helper()
	ctx := context.Background()
	js, err := jetstream.New(b.nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, b.space.StateBucket())
	require.NoError(t, err)
	for _, j := range jobs {
		data, err := json.Marshal(j)
		require.NoError(t, err)
		_, err = kv.Put(ctx, j.ID, data)
		require.NoError(t, err)
	}
}

func TestRun_Jobs(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	b.putJobs(t,
		wire.Job{ID: "j1", Type: "squares", Status: wire.StatusSucceeded, Attempts: 1, UpdatedAt: at.Add(1)},
		wire.Job{ID: "j2", Type: "squares", Status: wire.StatusFailed, Attempts: 2, UpdatedAt: at.Add(2 * time.Second),
			Error: "panic: boom\n\tgoroutine 1 [running]:\n\tmain.main() " + strings.Repeat("x", 100)},
		wire.Job{ID: "j3", Type: "cubes", Status: wire.StatusRunning, Attempts: 1, UpdatedAt: at.Add(3 * time.Second)},
		wire.Job{ID: "j4", Type: "squares", Status: wire.StatusRunning, Attempts: 3, UpdatedAt: at.Add(4 * time.Second)},
	)

	out, err := runLive(t, b, "jobs")
	require.NoError(t, err)
	require.Equal(t, `ID  TYPE     STATUS     ATTEMPTS  UPDATED_AT                      ERROR
j4  squares  running    3         2026-11-23T10:00:04Z            -
j3  cubes    running    1         2026-11-23T10:00:03Z            -
j2  squares  failed     2         2026-11-23T10:00:02Z            panic: boom goroutine 1 [running]: main.main() xxxxxxxxxxxx…
j1  squares  succeeded  1         2026-11-23T10:00:00.000000001Z  -
`, out)

	out, err = runLive(t, b, "jobs", "--status", "running,failed", "--type", "squares")
	require.NoError(t, err)
	require.Equal(t, []string{"ID", "j4", "j2"}, firstColumn(out))
	out, err = runLive(t, b, "jobs", "--limit", "2")
	require.NoError(t, err)
	require.Equal(t, []string{"ID", "j4", "j3"}, firstColumn(out))
	out, err = runLive(t, b, "jobs", "--limit", "2", "--before", "2026-11-23T10:00:03Z")
	require.NoError(t, err)
	require.Equal(t, []string{"ID", "j2", "j1"}, firstColumn(out), "the next page")
	out, err = runLive(t, b, "jobs", "--status", "dead")
	require.NoError(t, err)
	require.Equal(t, []string{"ID"}, firstColumn(out))

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"jobs", "--status", "done"}, `--status: unknown status "done": want queued, held, running, succeeded, failed, dead or cancelled`},
		{[]string{"jobs", "--limit", "0"}, `--limit: want 1 to 1000 jobs, not "0"`},
		{[]string{"jobs", "--before", "today"}, `--before: want an RFC 3339 time`},
		{[]string{"jobs", "--type", "a.b"}, "(400 Bad Request)"},
		{[]string{"jobs", "squares"}, "usage: conductorctl jobs [--status S[,S]] [--type T] [--limit N] [--before TIME]"},
		{[]string{"jobs", "--kind", "x"}, "unknown flag: --kind"},
	} {
		out, err := runLive(t, b, tc.args...)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
		require.Empty(t, out)
	}
}

// firstColumn returns the first word of every line of out.
func firstColumn(out string) []string {
	var col []string
	for line := range strings.Lines(out) {
		col = append(col, strings.Fields(line)[0])
	}
	return col
}
