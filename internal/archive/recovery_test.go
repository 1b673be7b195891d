package archive

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// damageSetup fills a store with jobs 0-24 (sealed segments 0 and 1, jobs
// 20-24 open in segment 2) and closes it.
func damageSetup(t *testing.T) (*Store, *testBundle) {
	t.Helper()
	s, bundle := setup(t, Config{})
	require.NoError(t, s.Put(entries(bundle.t0, 0, 25, 1)...))
	require.NoError(t, s.Close())
	return s, bundle
}

// recSize is the size of a record of the test's states.
var recSize = int64(recordLen(entries(testT0, 0, 1, 1)[0]))

var testT0 = (&testBundle{}).t0

// recordAt is the offset of the nth record of a segment.
func recordAt(n int) int64 { return dataHeader + int64(n)*recSize }

func (b *testBundle) path(name string) string { return filepath.Join(b.cfg.Dir, name) }

// requireReport requires that Open logged one warning or error, at level,
// with each of the attrs.
func (b *testBundle) requireReport(t *testing.T, level string, attrs ...string) {
	t.Helper()
	logs := b.logs.String()
	require.Equal(t, 1, strings.Count(logs, "level=WARN")+strings.Count(logs, "level=ERROR"), logs)
	require.Contains(t, logs, "level="+level)
	for _, a := range attrs {
		require.Contains(t, logs, a)
	}
}

// flip inverts the byte at off of the file.
func flip(t *testing.T, name string, off int64) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	b[0] ^= 0xff
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
}

func TestOpen_TornTail(t *testing.T) {
	t.Parallel()
	_, bundle := damageSetup(t)
	open := bundle.path("0000000000000002.data")
	// The last record, job 24, loses its last 7 bytes.
	require.NoError(t, os.Truncate(open, recordAt(5)-7))

	s, err := Open(bundle.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	for i := range 24 {
		requireState(t, s, i, 1)
	}
	requireMissing(t, s, 24)
	require.Equal(t, Damage{TornBytes: recSize - 7}, s.Stats().Damage)
	bundle.requireReport(t, "ERROR", fmt.Sprintf("torn_bytes=%d", recSize-7), "segments=[0000000000000002]")
	fi, err := os.Stat(open)
	require.NoError(t, err)
	require.Equal(t, recordAt(4), fi.Size(), "the torn record is cut away")

	// Writing goes on after the last intact record.
	require.NoError(t, s.Put(entries(bundle.t0, 24, 26, 2)...))
	s = bundle.reopen(t, s)
	requireState(t, s, 24, 2)
	requireState(t, s, 25, 2)
	require.True(t, s.Stats().Damage.Zero())
}

func TestOpen_DamagedRecord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		segment  string
		noIndex  bool // the damage is found when the index is rebuilt
		job      int  // whose record is damaged
		survive  []int
		lostMore []int
	}{
		{name: "open segment", segment: "0000000000000002.data", job: 22},
		{name: "sealed segment rebuilt", segment: "0000000000000001.data", noIndex: true, job: 13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, bundle := damageSetup(t)
			n := tt.job % 10
			flip(t, bundle.path(tt.segment), recordAt(n)+recordHeader+20) // inside the id
			if tt.noIndex {
				require.NoError(t, os.Remove(bundle.path("0000000000000001.index")))
			}

			s, err := Open(bundle.cfg)
			require.NoError(t, err)
			t.Cleanup(func() { s.Close() })
			for i := range 25 {
				if i != tt.job {
					requireState(t, s, i, 1)
				}
			}
			requireMissing(t, s, tt.job)
			want := Damage{SkippedRecords: 1, SkippedBytes: recSize}
			if tt.noIndex {
				want.IndexesRebuilt = 1
			}
			require.Equal(t, want, s.Stats().Damage)
			bundle.requireReport(t, "ERROR", "skipped_records=1")
		})
	}
}

// TestOpen_DamagedSealedRecord: a sealed segment with an index is not
// read whole at Open; the Get that reads the damaged record says so.
func TestOpen_DamagedSealedRecord(t *testing.T) {
	t.Parallel()
	_, bundle := damageSetup(t)
	flip(t, bundle.path("0000000000000000.data"), recordAt(3)+recordHeader+30)

	s, err := Open(bundle.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	_, _, err = s.Get(jobID(3))
	require.ErrorIs(t, err, ErrCorrupt)
	requireState(t, s, 4, 1)
	require.Equal(t, Damage{CorruptReads: 1}, s.Stats().Damage)
	require.Contains(t, bundle.logs.String(), "corrupt record")
}

func TestOpen_DamagedIndex(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		damage func(t *testing.T, index string)
	}{
		{"missing", func(t *testing.T, index string) { require.NoError(t, os.Remove(index)) }},
		{"header", func(t *testing.T, index string) { flip(t, index, 9) }},
		{"entries", func(t *testing.T, index string) { flip(t, index, indexHeader+5) }},
		{"filter", func(t *testing.T, index string) {
			fi, err := os.Stat(index)
			require.NoError(t, err)
			flip(t, index, fi.Size()-1)
		}},
		{"cut", func(t *testing.T, index string) { require.NoError(t, os.Truncate(index, 70)) }},
		{"empty", func(t *testing.T, index string) { require.NoError(t, os.Truncate(index, 0)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, bundle := damageSetup(t)
			index := bundle.path("0000000000000000.index")
			tt.damage(t, index)

			s, err := Open(bundle.cfg)
			require.NoError(t, err)
			t.Cleanup(func() { s.Close() })
			for i := range 25 {
				requireState(t, s, i, 1)
			}
			require.Equal(t, Damage{IndexesRebuilt: 1}, s.Stats().Damage)
			bundle.requireReport(t, "WARN", "indexes_rebuilt=1", "segments=[0000000000000000]")
			_, err = os.Stat(index)
			require.NoError(t, err, "the index is written again")

			s = bundle.reopen(t, s)
			require.True(t, s.Stats().Damage.Zero())
		})
	}
}

func TestOpen_BadDataHeader(t *testing.T) {
	t.Parallel()
	_, bundle := damageSetup(t)
	flip(t, bundle.path("0000000000000001.data"), 3)

	s, err := Open(bundle.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	for i := range 25 {
		if i >= 10 && i < 20 {
			requireMissing(t, s, i)
		} else {
			requireState(t, s, i, 1)
		}
	}
	require.Equal(t, Damage{SegmentsLost: 1}, s.Stats().Damage)
	_, err = os.Stat(bundle.path("0000000000000001.data.bad"))
	require.NoError(t, err, "set aside")
	bundle.requireReport(t, "ERROR", "segments_lost=1", "segments=[0000000000000001]")
}

// TestOpen_CrashLeftovers: what a crash leaves between two steps of a
// seal is no damage.
func TestOpen_CrashLeftovers(t *testing.T) {
	t.Parallel()
	_, bundle := damageSetup(t)
	// A seal of segment 2 cut after its index was written in part, and a
	// segment 3 created without its header.
	require.NoError(t, os.WriteFile(bundle.path("0000000000000002.index.tmp"), []byte("CNDARCI1"), 0o644))
	require.NoError(t, os.WriteFile(bundle.path("0000000000000003.data"), nil, 0o644))

	s, err := Open(bundle.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	for i := range 25 {
		requireState(t, s, i, 1)
	}
	require.True(t, s.Stats().Damage.Zero())
	require.Empty(t, bundle.logs.String())
	_, err = os.Stat(bundle.path("0000000000000002.index.tmp"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestOpen_IndexWithoutData(t *testing.T) {
	t.Parallel()
	_, bundle := damageSetup(t)
	require.NoError(t, os.Remove(bundle.path("0000000000000000.data")))

	s, err := Open(bundle.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	requireMissing(t, s, 0)
	requireState(t, s, 10, 1)
	require.Equal(t, Damage{SegmentsLost: 1}, s.Stats().Damage)
	bundle.requireReport(t, "ERROR", "segments_lost=1")
}

func TestOpen_Config(t *testing.T) {
	t.Parallel()
	_, err := Open(Config{})
	require.Error(t, err)
	_, err = Open(Config{Dir: t.TempDir(), MaxAge: -1})
	require.Error(t, err)
}

// TestOpen_TornSealed: a sealed segment's data file cut short (a disk
// that lost what the index covers) has its index rebuilt and its tail
// counted.
func TestOpen_TornSealed(t *testing.T) {
	t.Parallel()
	_, bundle := damageSetup(t)
	require.NoError(t, os.Truncate(bundle.path("0000000000000001.data"), recordAt(8)+3))

	s, err := Open(bundle.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	for i := range 25 {
		if i == 18 || i == 19 {
			requireMissing(t, s, i)
		} else {
			requireState(t, s, i, 1)
		}
	}
	require.Equal(t, Damage{TornBytes: 3, IndexesRebuilt: 1}, s.Stats().Damage)
	bundle.requireReport(t, "ERROR", "torn_bytes=3", "indexes_rebuilt=1")
}

// TestOpen_AfterCrash opens a copy of a store's files taken while it was
// open, as a crash of the process leaves them.
func TestOpen_AfterCrash(t *testing.T) {
	t.Parallel()
	s, bundle := setup(t, Config{})
	require.NoError(t, s.Put(entries(bundle.t0, 0, 25, 1)...))
	require.NoError(t, s.Put(entries(bundle.t0, 3, 4, 2)...))

	crashed := t.TempDir()
	des, err := os.ReadDir(bundle.cfg.Dir)
	require.NoError(t, err)
	for _, de := range des {
		b, err := os.ReadFile(bundle.path(de.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(crashed, de.Name()), b, 0o644))
	}
	cfg := bundle.cfg
	cfg.Dir = crashed
	s2, err := Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s2.Close() })
	for i := range 25 {
		v := 1
		if i == 3 {
			v = 2 // put again
		}
		requireState(t, s2, i, v)
	}
	require.True(t, s2.Stats().Damage.Zero())
}

// TestOpen_OldIndex: the indexes of the first format (whose filters were
// not blocked) are rebuilt, and that is no damage.
func TestOpen_OldIndex(t *testing.T) {
	t.Parallel()
	_, bundle := damageSetup(t)
	index := bundle.path("0000000000000000.index")
	b, err := os.ReadFile(index)
	require.NoError(t, err)
	copy(b, oldIndexMagic)
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
	require.NoError(t, os.WriteFile(index, b, 0o644))

	s, err := Open(bundle.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	for i := range 25 {
		requireState(t, s, i, 1)
	}
	require.True(t, s.Stats().Damage.Zero())
	b, err = os.ReadFile(index)
	require.NoError(t, err)
	require.Equal(t, indexMagic, string(b[:8]))
}
