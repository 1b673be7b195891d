package wire

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStoreBatch_RoundTrip(t *testing.T) {
	items := []StoreItem{
		{Op: StoreState, Key: "a", Rev: 7, TTL: time.Minute, Seq: 9, Data: []byte(`{"id":"a","type":"sq"}`)},
		{Op: StoreCreate, Key: "b", Data: []byte("{\n}")},
		{Op: StoreDead, Key: "c", Data: []byte{}},
	}
	var b []byte
	for _, it := range items {
		b = AppendStoreItem(b, it)
	}
	got, err := ParseStoreBatch(b)
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i := range items {
		require.Equal(t, items[i].Op, got[i].Op)
		require.Equal(t, items[i].Key, got[i].Key)
		require.Equal(t, items[i].Rev, got[i].Rev)
		require.Equal(t, items[i].TTL, got[i].TTL)
		require.Equal(t, items[i].Seq, got[i].Seq)
		require.Equal(t, string(items[i].Data), string(got[i].Data))
	}
}

func TestStoreBatch_Bad(t *testing.T) {
	for name, in := range map[string]string{
		"no header":    "s a 1 0 2",
		"unknown op":   "x a 1 0 0\n",
		"short data":   "s a 1 0 10\n{}",
		"fields":       "s a 1 0\n",
		"negative ttl": "s a 1 -5 0\n",
		"negative len": "s a 1 0 -1\n",
		"bad rev":      "s a -1 0 0\n",
		"long header":  "s " + string(make([]byte, 600)) + "\n",
	} {
		_, err := ParseStoreBatch([]byte(in))
		require.Error(t, err, name)
	}
	var b []byte
	for range MaxStoreItems + 1 {
		b = AppendStoreItem(b, StoreItem{Op: StoreState, Key: "k"})
	}
	_, err := ParseStoreBatch(b)
	require.ErrorContains(t, err, "more than")
}
