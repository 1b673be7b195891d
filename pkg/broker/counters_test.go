package broker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A worker's count ops add to its slot's counters, which Workers shows;
// an op with a bad name, or past 64 counters, counts nothing of it.
func TestCounters_AddUp(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	pool := setup(t, b.spec("counter"), b)
	run := func(counters string) {
		t.Helper()
		b.submit(t, fmt.Sprint(len(counters)), counters)
		b.outcome(t)
	}
	run(`{"emails":2,"bytes":100.5}`)
	run(`{"emails":1}`)
	run(`{"emails":5,"bad name":1}`) // refused whole
	var many strings.Builder
	many.WriteString(`{`)
	for i := range 70 {
		fmt.Fprintf(&many, `"c%d":1,`, i)
	}
	many.WriteString(`"last":1}`)
	run(many.String()) // past 64: refused whole
	b.workers.waitFor(t, func() bool {
		ws := pool.Workers()
		return len(ws) == 1 && ws[0].JobsDone == 4
	})
	w := pool.Workers()[0]
	require.Equal(t, map[string]float64{"emails": 3, "bytes": 100.5}, w.Counters)
	b.log.wait(t, "count op refused")
}
