package broker_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/broker"
)

func init() {
	fakeWorkers["deaf-asker"] = runDeafAsker
}

// deafGets is how many gets the deaf asker sends while it does not read
// its channel.
const deafGets = 128

// runDeafAsker says ready, reads the first byte of its job (a job larger
// than the pipe, whose write then waits for the worker), sends deafGets
// gets of one key, and reads nothing more.
func runDeafAsker() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	in := os.NewFile(proto.FDToWorker, "to-worker")
	var first [1]byte
	if _, err := in.Read(first[:]); err != nil {
		return 1
	}
	var lines []byte
	for i := 1; i <= deafGets; i++ {
		lines, _ = proto.Append(lines, proto.Message{Op: proto.OpLookup, Req: uint64(i), Do: proto.LookupGet, Name: "rates", Key: "big"})
	}
	if err := c.out.WriteLines(lines, "lookups"); err != nil {
		return 1
	}
	blockForever()
	return 0
}

// A worker that does not read its channel while a large job is written to
// it, and sends requests whose answers are large (a get the host's cache
// answers at once, with the whole value), is replaced once the answers
// waiting for it pass 4 MiB: the session does not hold them without
// bound. Found by an outside review: it held every answer, 32 MiB for 128
// requests of 80 bytes, gigabytes for a few thousand.
func TestRequests_AnswersBoundedForAWorkerThatDoesNotRead(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	value := json.RawMessage(`"` + strings.Repeat("v", 256<<10) + `"`)
	cfg := b.config(b.spec("deaf-asker"))
	var asked atomic.Int32
	cfg.OnRequest = func(r broker.Request, answer func(broker.Reply)) {
		asked.Add(1)
		answer(broker.Reply{Value: value, Rev: 7, Watched: true}) // a cache hit
	}
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(t.Context()))
	t.Cleanup(pool.Stop)

	// A job much larger than a pipe: its write waits for the worker.
	b.submit(t, "big", `"`+strings.Repeat("p", 512<<10)+`"`)
	line := b.log.wait(t, "the worker does not read its answers; killing it")
	require.Contains(t, line, "waiting_bytes=41") // just past 4 MiB
	// The job, whose write the kill cut short, goes to the replacement
	// (which does the same), and fails after a few: nothing waits for ever.
	require.NotEmpty(t, b.outcome(t).out.Err)
	require.Less(t, int(asked.Load()), 3*deafGets, "the requests after the cut are not asked")
}

func init() {
	fakeWorkers["own-writer"] = runOwnWriter
}

// runOwnWriter keeps lookup answers (ready's cache). For each
// job it sends, in one write, a set of key "k" and a get of it (as two
// goroutines of a handler may: the SDK keeps the get's answer, its req
// being past the set's), then reads until it has both replies and a
// drop naming "k" (or all), and answers the job with the order it got
// them in: "get", "set", "drop".
func runOwnWriter() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady, Cache: 8})
	var req uint64
	for {
		m, err := c.in.Read()
		if err != nil {
			return 0
		}
		switch m.Op {
		case proto.OpShutdown:
			return 0
		case proto.OpJob:
			set, get := req+1, req+2
			req += 2
			key := fmt.Sprintf("k%d", set)
			var lines []byte
			lines, _ = proto.Append(lines, proto.Message{Op: proto.OpLookup, Req: set, Do: proto.LookupSet, Name: "rates", Key: key, Value: json.RawMessage(`"new"`)})
			lines, _ = proto.Append(lines, proto.Message{Op: proto.OpLookup, Req: get, Do: proto.LookupGet, Name: "rates", Key: key})
			if err := c.out.WriteLines(lines, "lookups"); err != nil {
				return 1
			}
			var order []string
			gotSet, gotGet, gotDrop, needDrop := false, false, false, false
			for !gotSet || !gotGet || needDrop && !gotDrop {
				r, err := c.in.Read()
				if err != nil {
					return 1
				}
				switch {
				case r.Op == proto.OpReply && r.Req == set:
					gotSet = true
					order = append(order, "set")
				case r.Op == proto.OpReply && r.Req == get:
					gotGet = true
					needDrop = r.Keep && string(r.Value) == `"old"`
					order = append(order, fmt.Sprintf("get(%s,keep=%v)", r.Value, r.Keep))
				case r.Op == proto.OpDrop && (r.Name == "" || r.Key == key):
					if gotGet && !gotDrop {
						order = append(order, "drop")
						gotDrop = true
					}
				}
			}
			result, _ := json.Marshal(strings.Join(order, ","))
			c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Result: result})
		}
	}
}

// A worker reads its own write back once it is acknowledged. A get of
// the key sent while the set is in flight is answered from the host's
// cache at once, marked keep; the set's answer comes after the cache
// dropped the key and told the pool (Cache.Set -> OnChange ->
// Pool.LookupChanged), and the session writes that drop before the
// set's answer. Found by an outside review: the session's select took
// answers and changes in any order, and the set's answer could reach the
// worker before the drop, so that a Lookup right after SetLookup read
// the value kept from before.
func TestRequests_OwnWriteAnswerAfterTheDrop(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	cfg := b.config(b.spec("own-writer"))
	var pool *broker.Pool
	var mu sync.Mutex
	written := map[string]bool{} // the host cache's view: keys set
	cfg.OnRequest = func(r broker.Request, answer func(broker.Reply)) {
		switch r.Do {
		case broker.LookupGet: // a hit of the host's cache: at once, watched
			mu.Lock()
			v := `"old"`
			if written[r.Key] {
				v = `"new"`
			}
			mu.Unlock()
			answer(broker.Reply{Value: json.RawMessage(v), Rev: 1, Watched: true})
		case broker.LookupSet: // as the agent does: Cache.Set tells of the change, then answers
			go func() {
				mu.Lock()
				written[r.Key] = true
				mu.Unlock()
				pool.LookupChanged(r.Name, r.Key)
				answer(broker.Reply{Rev: 2})
			}()
		}
	}
	var err error
	pool, err = broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(t.Context()))
	t.Cleanup(pool.Stop)

	for i := range 300 {
		b.submit(t, fmt.Sprintf("j%d", i), "null")
		e := b.outcome(t)
		require.Empty(t, e.out.Err)
		var order string
		require.NoError(t, json.Unmarshal(e.out.Result, &order))
		if order == `get("old",keep=true),set,drop` {
			t.Fatalf("round %d: the worker got %s: its set was acknowledged while it still kept the value from before it (a Lookup then reads \"old\")", i, order)
		}
	}
}
