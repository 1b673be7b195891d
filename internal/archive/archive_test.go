package archive

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("ARCHIVE_BIG") != "" {
		os.Exit(m.Run()) // the big run measures, and has nothing to leak
	}
	goleak.VerifyTestMain(m)
}

// testBundle is what a test needs besides the store.
type testBundle struct {
	cfg  Config
	logs *bytes.Buffer // what the store logged
	t0   time.Time     // when the test's jobs start ending
}

// setup opens a store in a new directory with cfg's limits, sealing every
// 10 states unless cfg says otherwise.
func setup(t *testing.T, cfg Config) (*Store, *testBundle) {
	t.Helper()
	bundle := &testBundle{logs: &bytes.Buffer{}, t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg.Dir = cmpOr(cfg.Dir, t.TempDir())
	if cfg.SegmentStates == 0 {
		cfg.SegmentStates = 10
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), &syncWriter{w: bundle.logs}), nil))
	bundle.cfg = cfg
	s, err := Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, bundle
}

// reopen closes s and opens its directory again.
func (b *testBundle) reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	require.NoError(t, s.Close())
	s, err := Open(b.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// syncWriter makes a buffer safe for a logger.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func jobID(i int) string { return fmt.Sprintf("job-%07d", i) }

func jobState(i, version int) []byte {
	return fmt.Appendf(nil, `{"id":%q,"status":"succeeded","version":%d}`, jobID(i), version)
}

// entries returns the states of jobs [from, to), version v, ended a
// second apart from t0.
func entries(t0 time.Time, from, to, v int) []Entry {
	var es []Entry
	for i := from; i < to; i++ {
		es = append(es, Entry{ID: jobID(i), Ended: t0.Add(time.Duration(i) * time.Second), State: jobState(i, v)})
	}
	return es
}

// requireState requires that s returns version v of job i's state.
func requireState(t *testing.T, s *Store, i, v int) {
	t.Helper()
	state, ok, err := s.Get(jobID(i))
	require.NoError(t, err)
	require.True(t, ok, "job %d", i)
	require.Equal(t, string(jobState(i, v)), string(state))
}

func requireMissing(t *testing.T, s *Store, i int) {
	t.Helper()
	_, ok, err := s.Get(jobID(i))
	require.NoError(t, err)
	require.False(t, ok, "job %d", i)
}

func TestStore_PutGet(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{})

	// 95 states, in batches that cross the seals every 10.
	for from := 0; from < 95; from += 7 {
		require.NoError(t, s.Put(entries(bundle.t0, from, min(from+7, 95), 1)...))
	}
	for i := range 95 {
		requireState(t, s, i, 1)
	}
	requireMissing(t, s, 95)
	st := s.Stats()
	require.Equal(t, 95, st.States)
	require.Equal(t, 10, st.Segments) // 9 sealed, 5 states open
	require.Equal(t, bundle.t0, st.Oldest.UTC())
	require.True(t, st.Damage.Zero())
	require.Empty(t, bundle.logs.String())
}

func TestStore_NewestWins(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{})

	// Job 0 is put again in the same segment, in a later one, and in
	// the same batch twice; job 1 only in the first segment.
	require.NoError(t, s.Put(entries(bundle.t0, 0, 2, 1)...))
	require.NoError(t, s.Put(entries(bundle.t0, 0, 1, 2)...))
	requireState(t, s, 0, 2)
	require.NoError(t, s.Put(entries(bundle.t0, 10, 30, 1)...)) // two seals
	require.NoError(t, s.Put(entries(bundle.t0, 0, 1, 3)...))
	requireState(t, s, 0, 3)
	require.NoError(t, s.Put(append(entries(bundle.t0, 0, 1, 4), entries(bundle.t0, 0, 1, 5)...)...))
	requireState(t, s, 0, 5)
	require.NoError(t, s.Put(entries(bundle.t0, 30, 45, 1)...)) // job 0's newest sealed
	requireState(t, s, 0, 5)
	requireState(t, s, 1, 1)

	s = bundle.reopen(t, s)
	requireState(t, s, 0, 5)
	requireState(t, s, 1, 1)
}

func TestStore_Reopen(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{})
	require.NoError(t, s.Put(entries(bundle.t0, 0, 25, 1)...))
	before := s.Stats()

	s = bundle.reopen(t, s)
	require.Equal(t, before, s.Stats())
	for i := range 25 {
		requireState(t, s, i, 1)
	}
	// The open segment goes on where it stopped: 5 more seal it.
	require.NoError(t, s.Put(entries(bundle.t0, 25, 31, 1)...))
	require.Equal(t, 4, s.Stats().Segments)
	for i := range 31 {
		requireState(t, s, i, 1)
	}
	require.Empty(t, bundle.logs.String())
}

func TestStore_PutLimits(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{})
	ok := Entry{ID: "ok", Ended: bundle.t0, State: []byte("{}")}

	tests := []struct {
		name string
		e    Entry
		want error
	}{
		{"empty id", Entry{Ended: bundle.t0}, ErrEmptyID},
		{"id too long", Entry{ID: strings.Repeat("a", MaxIDLen+1)}, ErrIDTooLong},
		{"state too large", Entry{ID: "big", State: make([]byte, MaxStateLen+1)}, ErrStateTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Put(ok, tt.e)
			require.ErrorIs(t, err, tt.want)
			_, found, _ := s.Get("ok")
			require.False(t, found, "a batch with a bad entry writes nothing")
		})
	}

	// The limits themselves are accepted.
	longest := Entry{ID: strings.Repeat("a", MaxIDLen), Ended: bundle.t0, State: make([]byte, MaxStateLen)}
	require.NoError(t, s.Put(longest))
	s = bundle.reopen(t, s)
	state, found, err := s.Get(longest.ID)
	require.NoError(t, err)
	require.True(t, found)
	require.Len(t, state, MaxStateLen)
}

func TestStore_Closed(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{})
	require.NoError(t, s.Put(entries(bundle.t0, 0, 3, 1)...))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())

	_, _, err := s.Get(jobID(0))
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.Put(entries(bundle.t0, 0, 1, 1)...), ErrClosed)
	require.ErrorIs(t, s.Sync(), ErrClosed)
	s.Expire(bundle.t0)
}

func TestOpen_Locked(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{})
	_, err := Open(bundle.cfg)
	require.ErrorIs(t, err, ErrLocked)
	require.NoError(t, s.Close())
	s, err = Open(bundle.cfg)
	require.NoError(t, err, "Close lets go")
	require.NoError(t, s.Close())
}

// TestStore_ConcurrentPuts: Puts from several goroutines are serialised.
func TestStore_ConcurrentPuts(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g * 100; i < (g+1)*100; i += 5 {
				if err := s.Put(entries(bundle.t0, i, i+5, 1)...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range 400 {
		requireState(t, s, i, 1)
	}
	s = bundle.reopen(t, s)
	require.Equal(t, 400, s.Stats().States)
}

func TestStore_Sync(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{Sync: true})
	require.NoError(t, s.Put(entries(bundle.t0, 0, 15, 1)...))
	require.NoError(t, s.Sync())
	requireState(t, s, 14, 1)
}

// TestStore_ConcurrentGets reads states while they are put, sealed and
// expired: every state put is found, with the version put last.
func TestStore_ConcurrentGets(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{SegmentStates: 50, MaxStates: 400})
	const jobs = 2000

	var published atomic.Int64 // jobs [0, published) are put
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				n := int(published.Load())
				if n == 0 {
					continue
				}
				// The newest 300 are kept whatever Expire drops.
				i := max(0, n-300) + rand.IntN(min(n, 300))
				state, ok, err := s.Get(jobID(i))
				if !ok && err == nil && int(published.Load())-i > 300 {
					continue // dropped since: the newest 350 are kept
				}
				if err != nil || !ok || !bytes.Equal(state, jobState(i, 1)) {
					t.Errorf("job %d: %q, %v, %v", i, state, ok, err)
					return
				}
			}
		})
	}
	for from := 0; from < jobs; from += 10 {
		require.NoError(t, s.Put(entries(bundle.t0, from, from+10, 1)...))
		published.Store(int64(from + 10))
		s.Expire(bundle.t0)
	}
	close(done)
	wg.Wait()
	require.LessOrEqual(t, s.Stats().States, 450)
}

func TestStore_FilesNamed(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{})
	require.NoError(t, s.Put(entries(bundle.t0, 0, 10, 1)...))
	names, err := filepath.Glob(filepath.Join(bundle.cfg.Dir, "*"))
	require.NoError(t, err)
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	require.Equal(t, []string{"0000000000000000.data", "0000000000000000.index", "0000000000000001.data", "LOCK"}, names)
}
