package workerd_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/workerd"
)

type testBundle struct {
	c    *conductor.Conductor
	logs *logRecorder
	self string // this test binary: the workers' command
}

// setup starts a conductor, with its embedded JetStream and a token, and
// returns a Config of host h1 that connects to it.
func setup(t *testing.T) (workerd.Config, *testBundle) {
	t.Helper()
	c, err := conductor.New(conductor.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Token: "s3cret", MemoryStorage: true,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)).With("who", "conductor"),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	self, err := os.Executable()
	require.NoError(t, err)
	logs := newLogRecorder(t)
	cfg := workerd.Config{NATSURL: c.NATSURL(), Token: "s3cret", HostID: "h1", Logger: slog.New(logs)}
	return cfg, &testBundle{c: c, logs: logs, self: self}
}

// run runs workerd.Run in a goroutine and returns its cancel and its
// result; at cleanup it cancels and waits for Run to return.
func run(t *testing.T, cfg workerd.Config) (context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc, returned := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(returned)
		errc <- workerd.Run(ctx, cfg)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-returned:
		case <-time.After(time.Minute):
			t.Error("Run did not return within a minute of the cleanup")
		}
	})
	return cancel, errc
}

// waitReturn waits for Run's result.
func waitReturn(t *testing.T, errc <-chan error, limit time.Duration) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(limit):
		t.Fatalf("Run did not return within %s", limit)
		return nil
	}
}

// waitWorkers waits until the conductor sees pool typ running on h1 with n
// workers (a real process, announced by heartbeat).
func (b *testBundle) waitWorkers(t *testing.T, typ string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		pools, err := b.c.Pools(context.Background())
		require.NoError(t, err)
		for _, p := range pools {
			if p.Type == typ {
				return p.State == "running" && p.Workers == n && len(p.Hosts) == 1 && p.Hosts[0].Host == "h1"
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "pool %s running on h1 with %d workers", typ, n)
}

func (b *testBundle) spec(name string, count int) broker.Spec {
	return broker.Spec{Name: name, Count: count, Cmd: []string{b.self}}
}

func TestRun_RunsPoolsUntilCancelled(t *testing.T) {
	t.Parallel()
	cfg, bundle := setup(t)
	cfg.Pools = []broker.Spec{bundle.spec("squares", 1)}
	cancel, errc := run(t, cfg)
	bundle.waitWorkers(t, "squares", 1)

	ctx, done := context.WithTimeout(context.Background(), 30*time.Second)
	defer done()
	job, err := bundle.c.Client().SubmitAndWait(ctx, "squares", 7)
	require.NoError(t, err)
	require.Equal(t, conductor.StatusSucceeded, job.Status)
	require.JSONEq(t, "49", string(job.Result))

	// The host announces that it is leaving, before Run returns.
	space, err := subject.New("default")
	require.NoError(t, err)
	leaving := make(chan client.Host, 1)
	nc := bundle.c.Client().Conn()
	sub, err := nc.Subscribe(space.Host("h1"), func(m *nats.Msg) {
		var hb client.Host
		if json.Unmarshal(m.Data, &hb) == nil && hb.Leaving {
			select {
			case leaving <- hb:
			default:
			}
		}
	})
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, nc.Flush())
	cancel()
	require.NoError(t, waitReturn(t, errc, 30*time.Second))
	select {
	case hb := <-leaving:
		require.Equal(t, "h1", hb.Host)
	case <-time.After(10 * time.Second):
		t.Fatal("the host did not announce it was leaving")
	}
}

func TestRun_Reload(t *testing.T) {
	t.Parallel()
	cfg, bundle := setup(t)
	cfg.ConfigFile = filepath.Join(t.TempDir(), "pools.yaml")
	write := func(body string) { require.NoError(t, os.WriteFile(cfg.ConfigFile, []byte(body), 0o600)) }
	write("pools:\n  - name: squares\n    count: 1\n    cmd: " + bundle.self + "\n")
	cfg.Pools = []broker.Spec{bundle.spec("fixed", 1)} // kept by every reload
	reload := make(chan struct{})
	cfg.Reload = reload
	run(t, cfg)
	bundle.waitWorkers(t, "squares", 1)
	bundle.waitWorkers(t, "fixed", 1)

	write("pools:\n  - name: squares\n    count: 2\n    cmd: " + bundle.self + "\n" +
		"  - name: cubes\n    cmd: " + bundle.self + "\n")
	reload <- struct{}{}
	bundle.logs.wait(t, "SIGHUP: config reloaded", 1)
	bundle.waitWorkers(t, "squares", 2)
	bundle.waitWorkers(t, "cubes", 1)
	bundle.waitWorkers(t, "fixed", 1)

	write("pools:\n  - name: squares\n    count: soon\n    cmd: x\n")
	reload <- struct{}{}
	bundle.logs.wait(t, "SIGHUP: config not reloaded; pools unchanged", 1)
	bundle.waitWorkers(t, "squares", 2)
	bundle.waitWorkers(t, "cubes", 1)
}

func TestRun_ReloadWithoutConfigFile(t *testing.T) {
	t.Parallel()
	cfg, bundle := setup(t)
	cfg.Pools = []broker.Spec{bundle.spec("squares", 1)}
	reload := make(chan struct{})
	cfg.Reload = reload
	run(t, cfg)
	reload <- struct{}{}
	bundle.logs.wait(t, "SIGHUP: no --config file to reload", 1)
	bundle.waitWorkers(t, "squares", 1)
}

// TestRun_Kill blocks a job in a pool that would give it an hour to finish:
// after the cancel, only Kill makes Run return.
func TestRun_Kill(t *testing.T) {
	t.Parallel()
	cfg, bundle := setup(t)
	spec := bundle.spec("squares", 1)
	spec.StopTimeout = time.Hour
	cfg.Pools = []broker.Spec{spec}
	kill := make(chan struct{})
	cfg.Kill = kill
	cancel, errc := run(t, cfg)
	bundle.waitWorkers(t, "squares", 1)
	ctx := context.Background()
	id, err := bundle.c.Client().Submit(ctx, "squares", "block")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		job, err := bundle.c.Client().Job(ctx, id)
		require.NoError(t, err)
		return job.Status == conductor.StatusRunning
	}, 30*time.Second, 20*time.Millisecond)

	cancel()
	close(kill)
	require.NoError(t, waitReturn(t, errc, 30*time.Second))
}

func TestRun_Errors(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	require.NoError(t, err)
	pools := []broker.Spec{{Name: "squares", Cmd: []string{self}}}
	unreachable := "nats://127.0.0.1:1" // Run does not wait for the conductor
	tests := []struct {
		name string
		cfg  workerd.Config
		want string
	}{
		{"no pools", workerd.Config{}, "no pools"},
		{"missing config file", workerd.Config{ConfigFile: filepath.Join(t.TempDir(), "none.yaml")}, "no such file"},
		{"bad host id", workerd.Config{NATSURL: unreachable, HostID: "a.b", Pools: pools}, `host id "a.b"`},
		{"bad namespace", workerd.Config{NATSURL: unreachable, Namespace: "a>", Pools: pools}, `namespace "a>"`},
		{"two pools of a name", workerd.Config{NATSURL: unreachable, Pools: append(pools, pools...)}, `two pools named "squares"`},
		{"bad url", workerd.Config{NATSURL: "nats://x:y:z", Pools: pools}, "connect to nats://x:y:z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
			err := workerd.Run(context.Background(), tt.cfg)
			require.ErrorContains(t, err, tt.want)
		})
	}
	require.ErrorIs(t, workerd.Run(context.Background(), workerd.Config{}), workerd.ErrNoPools)
}

// logRecorder is a slog.Handler that writes to the test's output and counts
// each message, so that a test can wait for one.
type logRecorder struct {
	slog.Handler
	*recorded
}

type recorded struct {
	mu      sync.Mutex
	counts  map[string]int
	changed chan struct{} // closed and replaced on each record
}

func newLogRecorder(t *testing.T) *logRecorder {
	return &logRecorder{
		Handler:  slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}),
		recorded: &recorded{counts: map[string]int{}, changed: make(chan struct{})},
	}
}

func (l *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	l.mu.Lock()
	l.counts[r.Message]++
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	return l.Handler.Handle(ctx, r)
}

func (l *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecorder{Handler: l.Handler.WithAttrs(attrs), recorded: l.recorded}
}

func (l *logRecorder) WithGroup(name string) slog.Handler {
	return &logRecorder{Handler: l.Handler.WithGroup(name), recorded: l.recorded}
}

// wait waits until msg has been logged n times.
func (l *logRecorder) wait(t *testing.T, msg string, n int) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		l.mu.Lock()
		count, changed := l.counts[msg], l.changed
		l.mu.Unlock()
		if count >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%q not logged %d times within 30s", msg, n)
		}
	}
}

// TestRun_WrongToken: a workerd the conductor refuses keeps retrying and
// says why, naming the flag and the variable, until it is stopped.
func TestRun_WrongToken(t *testing.T) {
	t.Parallel()
	for _, token := range []string{"wrong", ""} {
		t.Run("token="+token, func(t *testing.T) {
			t.Parallel()
			cfg, b := setup(t)
			cfg.Token = token
			cfg.Pools = []broker.Spec{b.spec("auth", 1)}
			cancel, errc := run(t, cfg)
			b.logs.wait(t, "authentication failed: check --token / CONDUCTOR_TOKEN; retrying", 1)
			cancel()
			_ = waitReturn(t, errc, 30*time.Second)
		})
	}
}
