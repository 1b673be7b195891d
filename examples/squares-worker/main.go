// Command squares-worker serves jobs of type squares: the payload is a JSON
// number n and the result is n*n.
//
//	workerd --pool 'name=squares,count=2,cmd=./bin/squares-worker'
package main

import (
	"context"
	"fmt"
	"math"

	"github.com/conductor-run/conductor/pkg/worker"
)

func main() { worker.Main(square) }

// square is the handler. A payload that is not a number, or whose square is
// too large for a JSON number, fails the job for good.
func square(_ context.Context, job *worker.Job) (any, error) {
	var n *float64 // nil for a null payload
	if err := job.Decode(&n); err != nil {
		return nil, worker.Permanent(fmt.Errorf("squares: payload must be a number: %w", err))
	}
	if n == nil {
		return nil, worker.Permanent(fmt.Errorf("squares: payload must be a number: job %s: got null", job.ID))
	}
	sq := *n * *n
	if math.IsInf(sq, 0) {
		return nil, worker.Permanent(fmt.Errorf("squares: %v squared is too large", *n))
	}
	return sq, nil
}
