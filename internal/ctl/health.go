package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"text/tabwriter"
)

// healthAnswer is what GET /healthz answers.
type healthAnswer struct {
	Status  string `json:"status"`
	Error   string `json:"error"`
	Storage *struct {
		State            string `json:"state"`
		Reason           string `json:"reason"`
		FreeBytes        uint64 `json:"free_bytes"`
		ReserveBytes     uint64 `json:"reserve_bytes"`
		BallastBytes     uint64 `json:"ballast_bytes"`
		JobMsgsLimit     int64  `json:"job_msgs_limit"`
		JobBytesLimit    int64  `json:"job_bytes_limit"`
		DrainBytesPerJob int64  `json:"drain_bytes_per_job"`
		WriteErrors      uint64 `json:"write_errors"`
		Restarts         uint64 `json:"restarts"`
		Lost             []struct {
			Stream string `json:"stream"`
			Msgs   uint64 `json:"msgs"`
		} `json:"lost"`
	} `json:"storage"`
}

// health prints GET /healthz for a person; it exits 5 if conductord is not
// healthy (it cannot queue jobs or store their states).
func (c *client) health(ctx context.Context) error {
	resp, raw, err := c.send(ctx, http.MethodGet, "/healthz", nil, nil)
	if err != nil {
		return err
	}
	var h healthAnswer
	if err := json.Unmarshal(raw, &h); err != nil || h.Status == "" {
		return c.apiError(http.MethodGet, "/healthz", resp, raw)
	}
	if c.json() {
		if err := printJSON(c.out, raw); err != nil {
			return err
		}
		return healthExit(resp, h)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "status\t%s\n", h.Status)
	if s := h.Storage; s != nil {
		fmt.Fprintf(tw, "storage\t%s\n", s.State)
		ballast := ""
		if s.BallastBytes > 0 {
			ballast = ", ballast " + mib(s.BallastBytes)
		}
		fmt.Fprintf(tw, "free\t%s (reserve %s%s)\n", mib(s.FreeBytes), mib(s.ReserveBytes), ballast)
		if s.JobMsgsLimit > 0 {
			fmt.Fprintf(tw, "job stream limit\t%d jobs, %s (%d bytes a job kept for its drain)\n", s.JobMsgsLimit, mib(uint64(s.JobBytesLimit)), s.DrainBytesPerJob)
		}
		fmt.Fprintf(tw, "write errors\t%d (JetStream restarts %d)\n", s.WriteErrors, s.Restarts)
		for _, l := range s.Lost {
			fmt.Fprintf(tw, "lost\t%d messages of %s\n", l.Msgs, l.Stream)
		}
		if s.Reason != "" {
			fmt.Fprintf(tw, "reason\t%s\n", s.Reason)
		}
	} else if h.Error != "" {
		fmt.Fprintf(tw, "reason\t%s\n", h.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return healthExit(resp, h)
}

// healthExit is the error of an answer of GET /healthz: none for a 200,
// else exit 5.
func healthExit(resp *http.Response, h healthAnswer) error {
	if resp.StatusCode != http.StatusOK {
		return &ExitError{Code: ExitUnhealthy, Msg: "conductord is not healthy: " + strings.TrimSpace(h.Error)}
	}
	return nil
}

// mib is a size in bytes for a person, as the tables print it (size).
func mib(n uint64) string { return size(int64(min(n, math.MaxInt64))) }
