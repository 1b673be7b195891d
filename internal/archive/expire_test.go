package archive

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStore_Expire(t *testing.T) {
	t.Parallel()
	// Jobs 0-44 end a second apart: segments 0-3 sealed with 10 each,
	// 5 in the open segment 4.
	sealedBytes := dataHeader + 10*recSize + indexHeader + 10*entrySize + bloomBlockWords*8
	openBytes := dataHeader + 5*recSize
	tests := []struct {
		name     string
		cfg      Config
		at       time.Duration // after t0
		firstKep int           // the oldest job kept
	}{
		{"nothing", Config{}, time.Hour, 0},
		{"by age, none", Config{MaxAge: time.Minute}, 60 * time.Second, 0},
		// Segment 0's newest job, 9, ended at 9s; segment 1's at 19s.
		{"by age, one", Config{MaxAge: time.Minute}, 70 * time.Second, 10},
		{"by age, all sealed", Config{MaxAge: time.Minute}, time.Hour, 40},
		{"by count", Config{MaxStates: 25}, 0, 20},
		{"by count, exact", Config{MaxStates: 35}, 0, 10},
		{"by bytes", Config{MaxBytes: 2*sealedBytes + openBytes - 1}, 0, 30},
		{"by bytes, exact", Config{MaxBytes: 2*sealedBytes + openBytes}, 0, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, bundle := setup(t, tt.cfg)
			require.NoError(t, s.Put(entries(bundle.t0, 0, 45, 1)...))
			s.Expire(bundle.t0.Add(tt.at))
			for i := range 45 {
				if i < tt.firstKep {
					requireMissing(t, s, i)
				} else {
					requireState(t, s, i, 1)
				}
			}
			st := s.Stats()
			require.Equal(t, 45-tt.firstKep, st.States)
			require.Equal(t, bundle.t0.Add(time.Duration(tt.firstKep)*time.Second), st.Oldest)
			require.Equal(t, 1+(45-tt.firstKep)/10, st.Segments)

			// What Expire dropped stays dropped.
			s = bundle.reopen(t, s)
			require.Equal(t, 45-tt.firstKep, s.Stats().States)
		})
	}
}

// TestStore_ExpireSealsOld: a quiet store's open segment is sealed once
// it is SegmentAge old, and then dropped by age like any other.
func TestStore_ExpireSealsOld(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Config{MaxAge: time.Hour, SegmentAge: time.Minute})
	start := time.Now()
	s.now = func() time.Time { return start }
	require.NoError(t, s.Put(Entry{ID: "a", Ended: start, State: []byte("1")}))

	s.Expire(start.Add(30 * time.Second))
	require.Equal(t, 1, s.Stats().Segments)
	s.Expire(start.Add(time.Minute))
	require.Equal(t, 2, s.Stats().Segments, "sealed")
	s.Expire(start.Add(2 * time.Hour))
	require.Equal(t, Stats{Segments: 1, Bytes: dataHeader}, s.Stats())
	_, ok, err := s.Get("a")
	require.NoError(t, err)
	require.False(t, ok)
}

// TestStore_PutSealsOld: a Put into a segment SegmentAge old seals it
// first.
func TestStore_PutSealsOld(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Config{SegmentAge: time.Minute})
	now := time.Now()
	s.now = func() time.Time { return now }
	require.NoError(t, s.Put(Entry{ID: "a", Ended: now, State: []byte("1")}))
	now = now.Add(time.Minute)
	require.NoError(t, s.Put(Entry{ID: "b", Ended: now, State: []byte("2")}))
	require.Equal(t, 2, s.Stats().Segments)
	got, ok, err := s.Get("a")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "1", string(got))
}
