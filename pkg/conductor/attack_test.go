package conductor_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/tlsconf"
	"github.com/conductor-run/conductor/internal/tlsconf/tlstest"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// attackTLSServer is a NATS server that speaks TLS only (certificate signed
// by certs.CA) and requires no client certificate.
func attackTLSServer(t *testing.T, certs tlstest.Certs) *server.Server {
	t.Helper()
	tlsConfig, err := tlsconf.Server(tlsconf.Files{Cert: certs.ServerCert, Key: certs.ServerKey}, false)
	require.NoError(t, err)
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		TLS: true, TLSConfig: tlsConfig,
	})
	require.NoError(t, err)
	ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// attackStart runs Start with ctx bounded by d and a watchdog of d+10s;
// it returns Start's error and how long it took.
func attackStart(t *testing.T, cfg conductor.Config, d time.Duration) (error, time.Duration) {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := conductor.New(cfg)
	if err != nil {
		return err, 0
	}
	t.Cleanup(c.Stop)
	ctx := context.Background()
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- c.Start(ctx) }()
	watchdog := d + 10*time.Second
	if d == 0 {
		watchdog = 20 * time.Second
	}
	select {
	case err := <-done:
		return err, time.Since(began)
	case <-time.After(watchdog):
		t.Fatalf("Start did not return within %s (ctx deadline %s): it hangs", watchdog, d)
		return nil, 0
	}
}

// TestAttack_NATSWrongCA: conductord given a CA (--nats-tls-ca) that did
// not sign the NATS server's certificate must fail to start, in bounded
// time, with an error that names the TLS / certificate problem.
//
// FINDING: Start connects with nats.RetryOnFailedConnect(true) and
// MaxReconnects(-1), so nats.Connect "succeeds" on a handshake that can
// never succeed; the TLS error is swallowed and Start only fails when ctx
// expires, with "context deadline exceeded" (no word of the certificate).
func TestAttack_NATSWrongCA(t *testing.T) {
	t.Parallel()
	certs := tlstest.New(t)
	ns := attackTLSServer(t, certs)
	err, took := attackStart(t, conductor.Config{NATSURL: ns.ClientURL(), NATSTLSCA: certs.OtherCA}, 5*time.Second)
	require.Error(t, err, "a server whose certificate the CA did not sign is refused")
	require.Less(t, took, 4*time.Second, "a TLS failure is final: Start should not wait out ctx (took %s, err %v)", took, err)
	require.Regexp(t, `(?i)x509|certificate|tls`, err.Error(), "the error names the TLS failure")
}

// TestAttack_NATSWrongCANoDeadline: the same, with a ctx without deadline
// (conductord's own ctx is signal.NotifyContext): Start must not hang
// forever on a handshake that cannot succeed.
//
// It returns (JetStream's own request timeout bounds each request), but
// the error must still name the TLS failure rather than a timeout.
func TestAttack_NATSWrongCANoDeadline(t *testing.T) {
	t.Parallel()
	certs := tlstest.New(t)
	ns := attackTLSServer(t, certs)
	err, took := attackStart(t, conductor.Config{NATSURL: ns.ClientURL(), NATSTLSCA: certs.OtherCA}, 0)
	require.Error(t, err)
	t.Logf("Start failed after %s: %v", took, err)
	require.Regexp(t, `(?i)x509|certificate|tls`, err.Error(), "the error names the TLS failure")
}

// TestAttack_NATSGarbageCreds: a --nats-creds file that is not a NATS
// credentials file must be refused: by New (it only stats the file
// today), or by Start at once with an error naming the credentials.
//
// FINDING: New only os.Stat()s the file; Start's connect retries forever
// (RetryOnFailedConnect) and fails only at ctx's deadline with
// "context deadline exceeded", never naming --nats-creds.
func TestAttack_NATSGarbageCreds(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	require.NoError(t, err)
	ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	creds := filepath.Join(t.TempDir(), "garbage.creds")
	require.NoError(t, os.WriteFile(creds, []byte("this is not a creds file\n\x00\xff"), 0o600))
	err, took := attackStart(t, conductor.Config{NATSURL: ns.ClientURL(), NATSCreds: creds}, 5*time.Second)
	require.Error(t, err, "a garbage credentials file is refused")
	require.Less(t, took, 4*time.Second, "a bad creds file is final: Start should not wait out ctx (took %s, err %v)", took, err)
	require.Regexp(t, `(?i)cred|jwt|nkey|seed`, err.Error(), "the error names the credentials")
}

// TestAttack_RequeueBadIDs: ids that are unknown, bad, or of a job that is
// not dead come back at once with ErrJobNotFound / ErrNotDead, not after
// the 2s dead index wait, and nothing is queued.
func TestAttack_RequeueBadIDs(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()
	queued, err := cl.Submit(ctx, "nobody", 1)
	require.NoError(t, err)
	for _, tc := range []struct {
		id   string
		want error
	}{
		{"no-such-job", client.ErrJobNotFound},
		{"", client.ErrJobNotFound},
		{"a.b", client.ErrJobNotFound},
		{"*", client.ErrJobNotFound},
		{">", client.ErrJobNotFound},
		{"a b", client.ErrJobNotFound},
		{string(make([]byte, 4096)), client.ErrJobNotFound},
		{queued, client.ErrNotDead},
	} {
		began := time.Now()
		_, err := cl.Requeue(ctx, tc.id)
		require.ErrorIs(t, err, tc.want, "%q", tc.id)
		require.Less(t, time.Since(began), time.Second, "%q answered without the dead index wait", tc.id)
	}
	j, err := cl.Job(ctx, queued)
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, j.Status)
}

// TestAttack_RequeueConcurrent: many concurrent requeues of one dead job:
// exactly one queues it again, every other is ErrNotDead, and the job runs
// once more (not once per caller).
func TestAttack_RequeueConcurrent(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	startAgent(t, bundle, "squares")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := c.Client()
	dead, err := cl.SubmitAndWait(ctx, "squares", "fail")
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, dead.Status)
	runs := len(dead.History)
	// Drained, the pool takes nothing: the requeued job stays queued while
	// the others try, so a second success could only be a second queueing
	// (and not a fair requeue of a job that already ran and died again).
	res, err := cl.Command(ctx, "squares", client.PoolCommand{Op: client.OpDrain}, "")
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.Empty(t, res[0].Error)

	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = cl.Requeue(ctx, dead.ID)
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	var others []error
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, client.ErrNotDead):
			others = append(others, err)
		}
	}
	require.Equal(t, 1, ok, "exactly one requeue wins: %v", errs)
	require.Empty(t, others, "every losing requeue is ErrNotDead")
	_, err = cl.Command(ctx, "squares", client.PoolCommand{Op: client.OpResume}, "")
	require.NoError(t, err)
	again, err := cl.Wait(ctx, dead.ID)
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, again.Status)
	require.Len(t, again.History, 2*runs, "it ran once more, not once per requeue")
	require.Eventually(t, func() bool {
		list, err := cl.DeadJobs(ctx, "", 0)
		require.NoError(t, err)
		return len(list) == 1 && list[0].ID == dead.ID
	}, 10*time.Second, 10*time.Millisecond, "listed dead once")
}
