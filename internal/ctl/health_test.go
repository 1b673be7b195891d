package ctl

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRun_Health(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		code   int
		answer string
		want   []string
		exit   int // 0: no error
	}{
		{"ok", http.StatusOK,
			`{"status":"ok","storage":{"state":"ok","free_bytes":1048576000,"reserve_bytes":67108864,"write_errors":0}}`,
			[]string{"status        ok", "storage       ok", "free          1000.0 MiB (reserve 64.0 MiB)"}, 0},
		{"degraded", http.StatusOK,
			`{"status":"degraded","storage":{"state":"degraded","reason":"storage damaged: ...","lost":[{"stream":"conductor-default-jobs","msgs":10}]}}`,
			[]string{"lost          10 messages of conductor-default-jobs", "reason        storage damaged: ..."}, 0},
		{"full", http.StatusServiceUnavailable,
			`{"status":"full","error":"storage full: new jobs are refused","storage":{"state":"full","reason":"new jobs are refused","free_bytes":31457280,"reserve_bytes":16777216,"ballast_bytes":4194304,"job_msgs_limit":3627,"job_bytes_limit":1857024,"drain_bytes_per_job":4096}}`,
			[]string{"storage           full", "free              30.0 MiB (reserve 16.0 MiB, ballast 4.0 MiB)",
				"job stream limit  3627 jobs, 1.8 MiB (4096 bytes a job kept for its drain)", "reason            new jobs are refused"}, 5},
		{"no nats", http.StatusServiceUnavailable,
			`{"status":"unavailable","error":"not connected to NATS"}`,
			[]string{"status  unavailable", "reason  not connected to NATS"}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				require.Equal(t, "/healthz", r.URL.Path)
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.answer)
			}))
			t.Cleanup(srv.Close)
			out, err := run(t, srv, "health")
			for _, w := range tc.want {
				require.Contains(t, out, w)
			}
			if tc.exit == 0 {
				require.NoError(t, err)
				return
			}
			var exit *ExitError
			require.ErrorAs(t, err, &exit)
			require.Equal(t, tc.exit, exit.Code)
		})
	}
}
