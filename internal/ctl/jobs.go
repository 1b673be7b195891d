package ctl

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/url"
)

// jobs lists jobs by GET /v1/jobs, as a table. The conductor checks the
// values: a bad one is its 400, with its message.
func (c *client) jobs(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("jobs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	status := fs.String("status", "", "only jobs in this status, or in any of a comma list (queued,held,running,succeeded,failed,dead,cancelled)")
	typ := fs.String("type", "", "only jobs of this type")
	limit := fs.String("limit", "", "at most N jobs, 1 to 1000 (default 100)")
	before := fs.String("before", "", "only jobs updated before this time: the UPDATED_AT of the last job listed, for the next page")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("usage: conductorctl jobs [--status S[,S]] [--type T] [--limit N] [--before TIME]")
	}
	q := url.Values{}
	for k, v := range map[string]string{"status": *status, "type": *typ, "limit": *limit, "before": *before} {
		if v != "" {
			q.Set(k, v)
		}
	}
	path := "/v1/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.table(ctx, path, []string{"id", "type", "status", "attempts", "updated_at", "error"})
}
