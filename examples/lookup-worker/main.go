// Command lookup-worker serves jobs that read and write the conductor's
// named lookups, to show the SDK's lookup calls: the payload says what to
// do, and the result is what came of it.
//
//	{"do":"get","name":"rates","key":"usd"}            -> {"value":1.1}
//	{"do":"set","name":"rates","key":"usd","value":1.2} -> {}
//	{"do":"del","name":"rates","key":"usd"}            -> {}
//	{"do":"keys","name":"rates"}                       -> {"keys":["eur","usd"]}
//
// A get of a key the lookup does not hold answers {"missing":true}.
//
//	workerd --pool 'name=lookups,count=2,cmd=./bin/lookup-worker'
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/conductor-run/conductor/pkg/worker"
)

func main() { worker.Main(handle) }

// op is a job's payload.
type op struct {
	Do    string          `json:"do"`
	Name  string          `json:"name"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// outcome is a job's result.
type outcome struct {
	Value   json.RawMessage `json:"value,omitempty"`
	Missing bool            `json:"missing,omitempty"`
	Keys    []string        `json:"keys,omitempty"`
}

func handle(ctx context.Context, job *worker.Job) (any, error) {
	var o op
	if err := job.Decode(&o); err != nil {
		return nil, worker.Permanent(err)
	}
	var out outcome
	var err error
	switch o.Do {
	case "get":
		err = job.Lookup(ctx, o.Name, o.Key, &out.Value)
		if errors.Is(err, worker.ErrNoKey) {
			out.Missing, err = true, nil
		}
	case "set":
		err = job.SetLookup(ctx, o.Name, o.Key, o.Value)
	case "del":
		err = job.DeleteLookup(ctx, o.Name, o.Key)
	case "keys":
		out.Keys, err = job.LookupKeys(ctx, o.Name)
	default:
		return nil, worker.Permanent(fmt.Errorf("lookup-worker: unknown do %q: get, set, del or keys", o.Do))
	}
	if le, ok := errors.AsType[*worker.LookupError](err); ok && le.Code == 400 {
		return nil, worker.Permanent(err) // refused: a retry is refused too
	}
	return out, err
}
