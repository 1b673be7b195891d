package archive

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchState is a 300-byte state.
func benchState(i int) []byte {
	b := fmt.Appendf(nil, `{"id":"%s","status":"succeeded","pad":"`, benchID(i))
	b = append(b, bytes.Repeat([]byte("x"), 300-len(b)-2)...)
	return append(b, `"}`...)
}

func benchID(i int) string { return fmt.Sprintf("0193b8a4-%012d", i) }

// fill puts n states of 300 bytes in batches of 1000.
func fill(tb testing.TB, s *Store, n int) {
	tb.Helper()
	ended := time.Now()
	batch := make([]Entry, 0, 1000)
	for i := range n {
		batch = append(batch, Entry{ID: benchID(i), Ended: ended, State: benchState(i)})
		if len(batch) == cap(batch) || i == n-1 {
			if err := s.Put(batch...); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

func benchStore(b *testing.B, cfg Config) *Store {
	cfg.Dir = b.TempDir()
	cfg.Logger = discard
	s, err := Open(cfg)
	require.NoError(b, err)
	b.Cleanup(func() { s.Close() })
	return s
}

func BenchmarkStore_Put(b *testing.B) {
	for _, bc := range []struct {
		batch int
		sync  bool
	}{{1, false}, {100, false}, {1, true}, {100, true}} {
		batch := bc.batch
		b.Run(fmt.Sprintf("batch=%d/sync=%v", batch, bc.sync), func(b *testing.B) {
			s := benchStore(b, Config{Sync: bc.sync})
			es := make([]Entry, batch)
			for i := range es {
				es[i] = Entry{ID: benchID(i), Ended: time.Now(), State: benchState(i)}
			}
			b.SetBytes(int64(300 * batch))
			k := 0
			for b.Loop() {
				for i := range es {
					es[i].ID = benchID(k) // each Put of new jobs
					k++
				}
				require.NoError(b, s.Put(es...))
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "states/s")
		})
	}
}

func BenchmarkStore_Get(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("states=%d", n), func(b *testing.B) {
			s := benchStore(b, Config{})
			fill(b, s, n)
			b.ResetTimer()
			for b.Loop() {
				if _, ok, err := s.Get(benchID(rand.IntN(n))); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
	b.Run("miss", func(b *testing.B) {
		s := benchStore(b, Config{})
		fill(b, s, 1_000_000)
		b.ResetTimer()
		for b.Loop() {
			if _, ok, err := s.Get(benchID(-1 - rand.IntN(1<<30))); ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
}

// TestStore_Big fills $ARCHIVE_BIG states of 300 bytes, closes the store,
// and measures in a new process (this test binary again) how long Open
// takes, the process's RSS after it, and the latency of Gets.
func TestStore_Big(t *testing.T) {
	if dir := os.Getenv("ARCHIVE_BIG_DIR"); dir != "" {
		measureBig(t, dir)
		return
	}
	n, _ := strconv.Atoi(os.Getenv("ARCHIVE_BIG"))
	if n == 0 {
		t.Skip("set ARCHIVE_BIG to the number of states, e.g. 10000000")
	}
	dir := os.Getenv("ARCHIVE_BIG_KEEP") // a directory to fill once and keep
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(Config{Dir: dir, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	require.NoError(t, err)
	if have := s.Stats().States; have < n {
		start := time.Now()
		fill(t, s, n)
		took := time.Since(start)
		t.Logf("filled %d states in %v: %.0f states/s; RSS %d MB", n, took.Round(time.Millisecond),
			float64(n)/took.Seconds(), rssKB(t)/1024)
	}
	st := s.Stats()
	require.NoError(t, s.Close())
	t.Logf("stats: %d states, %d segments, %d MB on disk", st.States, st.Segments, st.Bytes>>20)

	cmd := exec.Command(os.Args[0], "-test.run=^TestStore_Big$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "ARCHIVE_BIG_DIR="+dir, "ARCHIVE_BIG="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	t.Logf("measured in a new process:\n%s", out)
	require.NoError(t, err)
}

// measureBig opens the store in dir, filled with n states, and measures.
func measureBig(t *testing.T, dir string) {
	n, err := strconv.Atoi(os.Getenv("ARCHIVE_BIG"))
	require.NoError(t, err)
	base := rssKB(t)
	start := time.Now()
	s, err := Open(Config{Dir: dir, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	took := time.Since(start)
	require.NoError(t, err)
	defer s.Close()
	runtime.GC()
	debug.FreeOSMemory()
	rss := rssKB(t)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("open: %v; RSS %d MB (%d MB before Open); heap in use %d MB",
		took.Round(time.Microsecond), rss/1024, base/1024, ms.HeapInuse>>20)

	for _, kind := range []string{"hit", "miss"} {
		const gets = 100_000
		lat := make([]time.Duration, 0, gets)
		for range gets {
			i := rand.IntN(n)
			if kind == "miss" {
				i = -1 - i
			}
			t0 := time.Now()
			_, ok, err := s.Get(benchID(i))
			lat = append(lat, time.Since(t0))
			require.NoError(t, err)
			require.Equal(t, kind == "hit", ok)
		}
		slices.Sort(lat)
		var sum time.Duration
		for _, l := range lat {
			sum += l
		}
		t.Logf("get %s: mean %v, p50 %v, p99 %v, max %v", kind, sum/gets,
			lat[gets/2], lat[gets*99/100], lat[gets-1])
	}
	t.Logf("RSS after gets %d MB", rssKB(t)/1024)
	require.Less(t, took, time.Second, "Open")
	require.Less(t, rss, int64(150<<10), "RSS, KB")
}

// rssKB returns the process's resident set size (VmRSS) after a GC.
func rssKB(t *testing.T) int64 {
	runtime.GC()
	f, err := os.Open("/proc/self/status")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			require.NoError(t, err)
			return kb
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
