package broker

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// Found by an outside review: each increment is finite, but their sum may not be: two
// count ops of math.MaxFloat64 make the slot's counter +Inf, which no
// JSON can carry: workerd's heartbeat (json.Marshal of the host's
// workers) then fails every second, and conductord loses the host. An op
// that would take a counter past the finite should be refused like one
// with a bad number.
func TestCounters_SumPastAFloatRefused(t *testing.T) {
	t.Parallel()
	s := &slot{pool: &Pool{}}
	_ = s.addCounters(map[string]float64{"big": math.MaxFloat64})
	_ = s.addCounters(map[string]float64{"big": math.MaxFloat64})
	w := s.snapshot()
	require.False(t, math.IsInf(w.Counters["big"], 0), "the slot's counter went to %v", w.Counters["big"])
	_, err := json.Marshal(w)
	require.NoError(t, err, "the slot's info (and so the heartbeat) can no longer be encoded")
}
