package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEnds_AppendJSON(t *testing.T) {
	for _, e := range []Ends{
		{Type: "noop", Jobs: []End{}},
		{Type: "noop", Jobs: []End{{ID: "j1", Status: StatusSucceeded}}},
		{Type: "sq", Jobs: []End{{ID: "j1", Status: StatusSucceeded, Batch: "b1"}, {ID: "seq-7", Status: StatusFailed}, {ID: `odd"<id>`, Status: StatusDead, Batch: "b\u00e9"}}},
		{Type: "sq", Jobs: []End{{ID: "j1", Status: StatusSucceeded, State: json.RawMessage(`{"id":"j1","result":[1,2]}`)}, {ID: "j2", Status: StatusDead, Batch: "b", State: json.RawMessage(`{"id":"j2"}`)}}, Superseded: 3},
		{Type: "sq", Jobs: []End{}, Superseded: 1},
	} {
		want, err := json.Marshal(&e)
		require.NoError(t, err)
		got := e.AppendJSON([]byte("x"))
		require.Equal(t, "x"+string(want), string(got))
		var back Ends
		require.NoError(t, json.Unmarshal(got[1:], &back))
		require.Equal(t, e, back)
	}
}

// DecodeEnds matches encoding/json on what AppendJSON writes, on random
// Ends, and on every prefix and single-byte change of those.
func TestDecodeEnds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "j1", "seq-7", "b", `q"uote`, `back\slash`, "tab\t", "é", "<&>", "\u2028", "\xff", "a b"}
	str := func() string {
		if rng.IntN(3) == 0 {
			return strs[rng.IntN(len(strs))]
		}
		return fmt.Sprintf("id-%d", rng.IntN(1000))
	}
	statuses := []Status{StatusSucceeded, StatusFailed, StatusDead, StatusCancelled, "odd"}
	check := func(data []byte) {
		t.Helper()
		var want Ends
		wantErr := json.Unmarshal(data, &want)
		got, err := DecodeEnds(data)
		if wantErr != nil {
			require.EqualError(t, err, wantErr.Error(), "%q", data)
			return
		}
		require.NoError(t, err, "%q", data)
		require.Equal(t, want, got, "%q", data)
	}
	fast := 0
	for range 2000 {
		e := Ends{Type: str()}
		for range rng.IntN(5) {
			j := End{ID: str(), Status: statuses[rng.IntN(len(statuses))], Batch: []string{"", str()}[rng.IntN(2)]}
			if rng.IntN(2) == 0 {
				j.State, _ = json.Marshal(map[string]any{"id": j.ID, "n": rng.IntN(100), "s": str()})
			}
			e.Jobs = append(e.Jobs, j)
		}
		if rng.IntN(3) == 0 {
			e.Superseded = rng.IntN(10)
		}
		data := e.AppendJSON(nil)
		check(data)
		if _, ok := decodeEndsFast(data); ok {
			fast++
		}
		for range 5 {
			bad := bytes.Clone(data)
			bad[rng.IntN(len(bad))] = `{}[],:"\ax1`[rng.IntN(11)]
			check(bad)
			check(data[:rng.IntN(len(data))])
		}
	}
	require.Greater(t, fast, 500, "the fast path is taken for plain strings")
}

func FuzzDecodeEnds(f *testing.F) {
	e := Ends{Type: "sq", Jobs: []End{{ID: "j1", Status: StatusSucceeded, Batch: "b1"}, {ID: "j2", Status: StatusFailed}}}
	f.Add(e.AppendJSON(nil))
	f.Add([]byte(`{"type":"sq","jobs":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var want Ends
		wantErr := json.Unmarshal(data, &want)
		got, err := DecodeEnds(data)
		if wantErr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}

func TestHolder(t *testing.T) {
	for _, h := range []Holder{FirstClaim(7, 12, "ab"), ClaimOver(7, 0, "requeue"), FirstClaim(0, 1, "x")} {
		require.Equal(t, h, ParseHolder(h.String()))
	}
	require.Equal(t, uint64(14), FirstClaim(7, 12, "ab").Rank)
	require.Equal(t, uint64(15), ClaimOver(7, 12, "ab").Rank)
	for _, s := range []string{"", "12.ab", "x.1.ab", "1.y.ab"} {
		require.Equal(t, Holder{}, ParseHolder(s), s)
	}
}

// BenchmarkDecodeEnds decodes the ends of a burst of 16 typical jobs, as
// conductord takes each ends message.
func BenchmarkDecodeEnds(b *testing.B) {
	var ends Ends
	ends.Type = "squares"
	for i := range 16 {
		j := typicalJob()
		j.ID = fmt.Sprintf("019a7e1c-5b3d-7c2e-9f1a-%012d", i)
		state, err := j.AppendJSON(nil)
		require.NoError(b, err)
		ends.Jobs = append(ends.Jobs, End{ID: j.ID, Status: StatusSucceeded, State: state})
	}
	data := ends.AppendJSON(nil)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEnds(data); err != nil {
			b.Fatal(err)
		}
	}
}
