package worker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/worker"
)

func TestJob_Decode(t *testing.T) {
	t.Parallel()
	job := &worker.Job{ID: "j1", Type: "squares", Payload: json.RawMessage(`{"n":3}`), Attempt: 1}

	var ok struct{ N int }
	require.NoError(t, job.Decode(&ok))
	require.Equal(t, 3, ok.N)

	var bad []int
	err := job.Decode(&bad)
	require.EqualError(t, err, "job j1: decode payload: json: cannot unmarshal object into Go value of type []int")
	var typeErr *json.UnmarshalTypeError
	require.ErrorAs(t, err, &typeErr)
}

func TestPermanent(t *testing.T) {
	t.Parallel()

	require.NoError(t, worker.Permanent(nil))
	require.False(t, worker.IsPermanent(nil))
	require.False(t, worker.IsPermanent(errors.New("x")))

	pathErr := &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist}
	err := fmt.Errorf("load: %w", worker.Permanent(pathErr))
	require.True(t, worker.IsPermanent(err))
	require.EqualError(t, err, "load: open /x: file does not exist")
	require.ErrorIs(t, err, fs.ErrNotExist)
	var got *fs.PathError
	require.ErrorAs(t, err, &got)
	require.Same(t, pathErr, got)
}

// TestEnv is not parallel: t.Setenv forbids it.
func TestEnv(t *testing.T) {
	t.Setenv("CONDUCTOR_PROTOCOL", "channel")
	t.Setenv("CONDUCTOR_POOL", "squares")
	t.Setenv("CONDUCTOR_WORKER_INDEX", "2")
	t.Setenv("CONDUCTOR_HOST", "h1")
	require.True(t, worker.IsWorker())
	require.Equal(t, "squares", worker.Pool())
	require.Equal(t, 2, worker.Index())
	require.Equal(t, "h1", worker.Host())

	for _, v := range []string{"", "x", "-1"} {
		t.Setenv("CONDUCTOR_WORKER_INDEX", v)
		require.Equal(t, -1, worker.Index(), "CONDUCTOR_WORKER_INDEX=%q", v)
	}
	t.Setenv("CONDUCTOR_PROTOCOL", "none")
	require.False(t, worker.IsWorker())
}
