package conductor_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/conductor"
)

func TestNew_Sync(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  conductor.Config
		err  string // "" for none
	}{
		{"default", conductor.Config{}, ""},
		{"always", conductor.Config{Sync: conductor.SyncAlways}, ""},
		{"interval", conductor.Config{Sync: conductor.SyncInterval, SyncInterval: time.Second}, ""},
		{"interval alone", conductor.Config{SyncInterval: time.Second}, ""},
		{"unknown", conductor.Config{Sync: "sometimes"}, `bad sync "sometimes": want "always" or "interval"`},
		{"negative", conductor.Config{SyncInterval: -time.Second}, "bad sync interval -1s"},
		{"interval with always", conductor.Config{Sync: conductor.SyncAlways, SyncInterval: time.Second}, `sync interval 1s applies to sync "interval"`},
		{"nats url", conductor.Config{NATSURL: "nats://127.0.0.1:4222", Sync: conductor.SyncAlways}, "with a NATS URL the store is that server's"},
		{"nats url interval", conductor.Config{NATSURL: "nats://127.0.0.1:4222", SyncInterval: time.Second}, "with a NATS URL"},
		{"memory", conductor.Config{MemoryStorage: true, Sync: conductor.SyncAlways}, "with memory storage nothing is written to disk"},
		{"nats url unset", conductor.Config{NATSURL: "nats://127.0.0.1:4222"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := conductor.New(tc.cfg)
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
			if tc.cfg.NATSURL != "" || tc.cfg.MemoryStorage {
				require.ErrorIs(t, err, conductor.ErrSyncNotApplicable)
			}
		})
	}
}

// TestConductor_SyncAlways runs the embedded server fsyncing every write:
// a job is queued, and the start says how the store is synced.
func TestConductor_SyncAlways(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	c, err := conductor.New(conductor.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Sync: conductor.SyncAlways,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	_, err = c.Client().Submit(ctx, "later", 1)
	require.NoError(t, err)
	require.Contains(t, logs.String(), "sync=always")
}

// syncBuffer is a bytes.Buffer safe for a logger's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
