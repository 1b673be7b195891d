package hostsvc

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

func TestReadHead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		data string
		want head
		err  string
	}{
		{data: `{"id":"j","type":"sq","status":"running","result":{"a":[1,{"type":"x"}]}}`, want: head{"j", "sq", "running"}},
		{data: ` {"id":"j", "type":"sq"} `, want: head{ID: "j", Type: "sq"}},
		{data: `{"id":"j","type":"sq","type":"other"}`, err: `key "type" twice`},
		{data: `{"id":"j","type":"sq","Type":"other"}`, err: `key "Type" twice`},
		{data: `{"id":"j","type":"sq","TYPE":"other"}`, err: "twice"},
		{data: `{"id":"j","status":"running","ſtatus":"succeeded"}`, err: "twice"}, // the long s folds to s
		{data: `{"id":"j","x":1,"X":2}`, err: "twice"},
		{data: `{"id":"j","a":{"t":1,"T":2},"b":["T","t"],"c":"\"t\":1,\"T\""}`, want: head{ID: "j"}}, // inner keys, strings
		{data: `{"id":"j","\u0074ype":"sq","type":"x"}`, err: `key "type" twice`},                     // escaped
		{data: `{"id":"j"}{}`, err: "after top-level value"},
		{data: `{"id":"j"}x`, err: "after top-level value"},
		{data: `["id","j"]`, err: "not a job's state"},
		{data: `null`, err: "not a JSON object"},
		{data: `{"id":7}`, err: "not a job's state"},
		{data: `{"id":"j"`, err: "not a job's state"},
		{data: ``, err: "not a job's state"},
		{data: manyKeysJSON(40, "k7"), err: `key "k7" twice`},
		{data: manyKeysJSON(40, "K39"), err: `key "K39" twice`},
		{data: manyKeysJSON(40, ""), want: head{ID: "j"}},
		{data: manyKeysJSON(70, ""), err: "more than 64 keys"},
	} {
		h, err := readHead([]byte(tc.data))
		if tc.err != "" {
			assert.ErrorContains(t, err, tc.err, tc.data)
			continue
		}
		if assert.NoError(t, err, tc.data) {
			assert.Equal(t, tc.want, h, tc.data)
		}
	}
}

// manyKeysJSON returns a state of n keys k0..k(n-1), and extra last, if set.
func manyKeysJSON(n int, extra string) string {
	var b strings.Builder
	b.WriteString(`{"id":"j"`)
	for i := range n {
		fmt.Fprintf(&b, `,"k%d":%d`, i, i)
	}
	if extra != "" {
		fmt.Fprintf(&b, `,%q:0`, extra)
	}
	return b.String() + "}"
}

// TestStore_KeysTwiceRefused: a state with a key twice but for case reads
// as one type to conductord's check and another to a case-sensitive
// reader: refused, and nothing written.
func TestStore_KeysTwiceRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	c := &Caller{nc: b.nc, sp: b.sp, id: "h1", making: make(chan struct{}, makingAtOnce)}
	seq := b.job(t, "sq", "j1")
	_, err := c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "j1", Seq: seq,
		Data: []byte(`{"id":"j1","type":"other","Type":"sq","status":"running"}`)})
	require.ErrorContains(t, err, "twice")
	_, err = b.states.Get(ctx, "j1")
	require.Error(t, err, "nothing stored")
}
