package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/worker"
)

func TestSquare(t *testing.T) {
	t.Parallel()

	tests := []struct {
		payload string
		want    string // the result as JSON, or "" for an error
		wantErr string
	}{
		{payload: `7`, want: `49`},
		{payload: `-1.5`, want: `2.25`},
		{payload: `0`, want: `0`},
		{payload: `"7"`, wantErr: "squares: payload must be a number: job j1: decode payload: json: cannot unmarshal string into Go value of type float64"},
		{payload: `null`, wantErr: "squares: payload must be a number: job j1: got null"},
		{payload: ``, wantErr: "squares: payload must be a number: job j1: decode payload: unexpected end of JSON input"},
		{payload: `1e200`, wantErr: "squares: 1e+200 squared is too large"},
	}
	for _, tt := range tests {
		t.Run(tt.payload, func(t *testing.T) {
			t.Parallel()
			job := &worker.Job{ID: "j1", Type: "squares", Payload: json.RawMessage(tt.payload), Attempt: 1}

			got, err := square(context.Background(), job)

			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				require.True(t, worker.IsPermanent(err))
				return
			}
			require.NoError(t, err)
			b, err := json.Marshal(got)
			require.NoError(t, err)
			require.JSONEq(t, tt.want, string(b))
		})
	}
}
