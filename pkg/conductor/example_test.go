package conductor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// RunBatch without a Client embeds a conductor and forks this program as
// its workers; here the test binary serves testHandler (see TestMain),
// which squares numbers.
func ExampleRunBatch() {
	var mu sync.Mutex
	sum := 0
	res, err := conductor.RunBatch(context.Background(), conductor.BatchConfig{
		Type:    "squares",
		Workers: 2,
		Jobs: func(submit func(payload any) error) error {
			for i := range 5 {
				if err := submit(i); err != nil {
					return err
				}
			}
			return nil
		},
		OnJobEnd: func(j *client.Job) {
			var sq int
			_ = json.Unmarshal(j.Result, &sq)
			mu.Lock()
			sum += sq
			mu.Unlock()
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d jobs, %d succeeded, sum of squares %d\n", res.Total, res.Succeeded, sum)
	// Output: 5 jobs, 5 succeeded, sum of squares 30
}
