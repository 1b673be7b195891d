package hostsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// Review 19f: the makers of a type's consumers take one of 64 mutexes by
// the hash of the stream and type, held across their JetStream calls. A
// host with a credential of its own may ask only for its own types, but
// it names them: it can pick one that shares the stripe of another host's
// type, and flood requests for it. The other host's request must still be
// answered within a bound that does not grow with the flood: the
// credential's requests in flight (maxMaking/8) and its rate bound it.

// stripeOf is the stripe lockType takes for typ.
func stripeOf(sp subject.Space, typ string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(sp.JobStream()))
	h.Write([]byte{0})
	h.Write([]byte(typ))
	return h.Sum32() % uint32(len(typeLocks))
}

// TestAttack19f_StripeFloodDelaysAnotherTypeBoundedly: credential "evil"
// floods requests for all three consumers of a type sharing the stripe
// of credential "good"'s type, each asking a longer ack wait than the
// last (so each updates the three consumers: the costliest request). The
// requests of "good", made meanwhile, are answered OK, each within a
// second.
func TestAttack19f_StripeFloodDelaysAnotherTypeBoundedly(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const victim = "victim"
	evilTyp := ""
	for i := 0; evilTyp == ""; i++ {
		if typ := fmt.Sprintf("evil%d", i); stripeOf(b.sp, typ) == stripeOf(b.sp, victim) {
			evilTyp = typ
		}
	}
	good := NewCaller(b.nc, b.sp)
	good.id = "good"
	ctx := context.Background()
	start := time.Now()
	require.NoError(t, good.Consumers(ctx, victim, 30*time.Second))
	baseline := time.Since(start)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, ok, refused atomic.Int64
	var wait atomic.Int64
	for range maxMaking / 8 { // as many as a credential may have in flight
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := sent.Add(1)
				data, _ := json.Marshal(wire.ConsumersRequest{AckWait: wire.MinAckWait + time.Duration(n)*time.Millisecond + time.Duration(wait.Load())})
				m, err := b.nc.Request(b.sp.ConsumersAs("evil", evilTyp), data, 15*time.Second)
				if err != nil {
					continue
				}
				if code, _ := strconv.Atoi(m.Header.Get(names.HeaderStatus)); code == http.StatusOK {
					ok.Add(1)
				} else {
					refused.Add(1)
				}
			}
		})
	}
	require.Eventually(t, func() bool { return ok.Load() >= 8 }, 10*time.Second, time.Millisecond, "the flood is served")
	var worst time.Duration
	for i := range 5 {
		start := time.Now()
		err := good.Consumers(ctx, victim, 30*time.Second+time.Duration(i)*time.Second)
		worst = max(worst, time.Since(start))
		require.NoError(t, err, "good's request %d during the flood", i)
	}
	close(stop)
	wg.Wait()
	t.Logf("good's request alone: %s; during the flood: at worst %s (evil: %d sent, %d made, %d refused)", baseline, worst, sent.Load(), ok.Load(), refused.Load())
	require.Less(t, worst, time.Second, "a flood for a type of the same stripe delays another credential's type")
}
