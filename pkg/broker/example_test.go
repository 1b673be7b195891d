package broker_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/conductor-run/conductor/pkg/broker"
)

// A worker can be written in any language: this one is a shell script
// that reads jobs on fd 3 and answers on fd 4.
func Example() {
	const worker = `echo '{"op":"ready"}' >&4
while read -r line <&3; do
  case "$line" in *'"op":"job"'*) ;; *) exit 0 ;; esac
  id=$(printf '%s\n' "$line" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  echo '{"op":"done","id":"'"$id"'","result":"hello from sh"}' >&4
done`

	jobs := make(chan *broker.Job, 1)
	jobs <- &broker.Job{ID: "job-1", Type: "greet", Payload: json.RawMessage(`{}`), Attempt: 1}
	outcomes := make(chan broker.Outcome, 1)
	pool, err := broker.NewPool(broker.Config{
		Spec: broker.Spec{Name: "greet", Cmd: []string{"sh", "-c", worker}},
		Source: broker.SourceFuncs{
			NextFunc: func(ctx context.Context) (*broker.Job, error) {
				select {
				case j := <-jobs:
					return j, nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			},
			DoneFunc: func(_ *broker.Job, out broker.Outcome) { outcomes <- out },
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := pool.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	out := <-outcomes
	fmt.Println(string(out.Result), out.Crashed)
	pool.Stop()
	fmt.Println(pool.Info().State)
	// Output:
	// "hello from sh" false
	// stopped
}

func ExampleParseSpec() {
	spec, err := broker.ParseSpec(`name=squares,count=2,stop_timeout=1m,cmd=./bin/squares-worker --label 'a b'`)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(spec.Name, spec.Count, spec.StopTimeout)
	fmt.Printf("%q\n", spec.Cmd)

	_, err = broker.ParseSpec(`name=squares,count=two,cmd=./bin/squares-worker`)
	fmt.Println(err)
	// Output:
	// squares 2 1m0s
	// ["./bin/squares-worker" "--label" "a b"]
	// broker: bad pool spec "name=squares,count=two,cmd=./bin/squares-worker": count: "two" is not a whole number
}

// A program outside conductor can follow its workers through OnEvent.
func ExampleConfig_onEvent() {
	events := make(chan broker.Event, 16)
	pool, err := broker.NewPool(broker.Config{
		Spec:    broker.Spec{Name: "sleeper", Protocol: broker.ProtocolNone, Cmd: []string{"sleep", "60"}},
		OnEvent: func(e broker.Event) { events <- e },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := pool.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	for e := range events {
		fmt.Printf("%s %q\n", e.Kind, e.Reason)
		if e.Kind == broker.EventWorkerReady {
			break
		}
	}
	pool.Stop() // the pool's last event comes before Stop returns
	close(events)
	for e := range events {
		fmt.Printf("%s %q %q\n", e.Kind, e.Reason, e.Exit)
	}
	fmt.Println(pool.Info().State, pool.Workers())
	// Output:
	// start "start"
	// ready ""
	// exit "stop" "signal: terminated"
	// stopped "" ""
	// stopped []
}
