package workerd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/workerd"
)

// TestRun_WorkersDoNotSeeTheToken: the CONDUCTOR_TOKEN of workerd's
// environment does not reach its workers; a pool's own env= does. Not
// parallel: it sets the process's environment.
func TestRun_WorkersDoNotSeeTheToken(t *testing.T) {
	t.Setenv(names.EnvToken, "s3cret")
	cfg, b := setup(t)
	own := b.spec("own", 1)
	own.Env = []string{names.EnvToken + "=the-pool's-own"}
	cfg.Pools = []broker.Spec{b.spec("squares", 1), own}
	run(t, cfg)
	b.waitWorkers(t, "squares", 1)
	b.waitWorkers(t, "own", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for pool, want := range map[string]string{"squares": `{"set":false,"value":""}`, "own": `{"set":true,"value":"the-pool's-own"}`} {
		job, err := b.c.Client().SubmitAndWait(ctx, pool, "token")
		require.NoError(t, err)
		require.JSONEq(t, want, string(job.Result), pool)
	}
}

// TestRun_TokenFile: the token read from a file connects; a file other
// users may read still does, with a warning.
func TestRun_TokenFile(t *testing.T) {
	t.Parallel()
	for _, mode := range []os.FileMode{0o600, 0o644} {
		t.Run(fmt.Sprintf("%#o", mode), func(t *testing.T) {
			t.Parallel()
			cfg, b := setup(t)
			cfg.Token, cfg.TokenFile = "", filepath.Join(t.TempDir(), "token")
			require.NoError(t, os.WriteFile(cfg.TokenFile, []byte("s3cret\n"), mode))
			require.NoError(t, os.Chmod(cfg.TokenFile, mode)) // past the umask
			cfg.Pools = []broker.Spec{b.spec("squares", 1)}
			run(t, cfg)
			b.waitWorkers(t, "squares", 1)
			b.logs.mu.Lock()
			warned := b.logs.counts["the token file may be read by other users of this host: chmod 600 it"]
			b.logs.mu.Unlock()
			require.Equal(t, mode == 0o644, warned == 1, "warned %d times", warned)
		})
	}
}

func TestRun_TokenFileErrors(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
		return path
	}
	pools := []broker.Spec{{Name: "squares", Cmd: []string{self}}}
	for _, tc := range []struct {
		name, file, token, want string
	}{
		{"Missing", filepath.Join(dir, "none"), "", "token file: open " + filepath.Join(dir, "none") + ": no such file or directory"},
		{"Empty", write("empty", "\n"), "", "empty"},
		{"TwoLines", write("two", "a\nb\n"), "", "more than one line"},
		{"TooLarge", write("large", strings.Repeat("x", 65<<10)), "", "more than 65536 bytes"},
		{"Directory", dir, "", "not a regular file"},
		{"Both", write("ok", "s3cret"), "s3cret", "give a token or a token file, not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := workerd.Run(context.Background(), workerd.Config{
				NATSURL: "nats://127.0.0.1:1", Token: tc.token, TokenFile: tc.file, Pools: pools,
			})
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestRun_MaxPoolSize: a pool above the host's maximum is refused at start,
// and a config file with one is not reloaded.
func TestRun_MaxPoolSize(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	require.NoError(t, err)
	err = workerd.Run(context.Background(), workerd.Config{
		NATSURL: "nats://127.0.0.1:1", Pools: []broker.Spec{{Name: "big", Count: workerd.DefaultMaxPoolSize + 1, Cmd: []string{self}}},
	})
	require.ErrorContains(t, err, `pool "big": count 257 is more than this host's maximum pool size, 256 (workerd --max-pool-size)`)

	cfg, b := setup(t)
	cfg.MaxPoolSize = 2
	cfg.ConfigFile = filepath.Join(t.TempDir(), "pools.yaml")
	write := func(count int) {
		body := fmt.Sprintf("pools:\n  - name: squares\n    count: %d\n    cmd: %s\n", count, b.self)
		require.NoError(t, os.WriteFile(cfg.ConfigFile, []byte(body), 0o600))
	}
	write(3)
	require.ErrorContains(t, workerd.Run(context.Background(), cfg), `pool "squares": count 3 is more than this host's maximum pool size, 2`)

	write(2)
	reload := make(chan struct{})
	cfg.Reload = reload
	run(t, cfg)
	b.waitWorkers(t, "squares", 2)
	write(3)
	reload <- struct{}{}
	b.logs.wait(t, "SIGHUP: config not reloaded; pools unchanged", 1)
	b.waitWorkers(t, "squares", 2)
}

// The public default is the agent's: workerd's flag and a Config left at
// zero mean the same bound.
func TestDefaultMaxPoolSize(t *testing.T) {
	require.Equal(t, agent.DefaultMaxPoolSize, workerd.DefaultMaxPoolSize)
}

// TestRun_NATSCredsErrors: a --nats-creds file that is missing, or is no
// credentials file, fails the start at once, saying why.
func TestRun_NATSCredsErrors(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
		return path
	}
	jwtOnly := "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.e30.c2ln\n------END NATS USER JWT------\n"
	for _, tc := range []struct {
		name, file, want string
	}{
		{"Missing", filepath.Join(dir, "none"), "no such file or directory"},
		{"Garbage", write("garbage", "not a credentials file\n"), "no user seed in it"},
		{"NoSeed", write("jwt-only", jwtOnly), "no user seed in it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := workerd.Run(context.Background(), workerd.Config{
				NATSURL: "nats://127.0.0.1:1", NATSCreds: tc.file, Pools: []broker.Spec{{Name: "squares", Cmd: []string{self}}},
			})
			require.ErrorContains(t, err, "--nats-creds")
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestRun_JobLeaseBounds: a job lease out of bounds is refused at start,
// naming the flag.
func TestRun_JobLeaseBounds(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	require.NoError(t, err)
	for _, d := range []time.Duration{time.Millisecond, 2 * time.Hour, -time.Second} {
		err := workerd.Run(context.Background(), workerd.Config{
			NATSURL: "nats://127.0.0.1:1", JobLease: d, Pools: []broker.Spec{{Name: "squares", Cmd: []string{self}}},
		})
		require.ErrorContains(t, err, "--job-lease", "%s", d)
	}
}

// TestJobLease_BoundsAreConductords: the bounds workerd checks --job-lease
// against are those conductord holds a host's lease to (written as
// numbers: go doc of a public package names no internal one).
func TestJobLease_BoundsAreConductords(t *testing.T) {
	t.Parallel()
	require.Equal(t, wire.MinAckWait, workerd.MinJobLease)
	require.Equal(t, wire.MaxAckWait, workerd.MaxJobLease)
}
