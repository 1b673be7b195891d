package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	pkgclient "github.com/conductor-run/conductor/pkg/client"
)

// maxLogLine bounds one line of the log stream.
const maxLogLine = 4 << 20

func (a *app) logsCmd() *cobra.Command {
	var host string
	var tail int
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs POOL [-f] [--host ID] [--tail N]",
		Short: "print what the workers of POOL wrote on stdout and stderr",
		Long: `Print the last lines the workers of POOL wrote on stdout and stderr, on every live
host that runs it (or --host), from GET /v1/pools/{name}/logs; with -f, go on printing
new lines until interrupted. Each line reads TIME HOST/POOL[INDEX] STREAM: LINE, with
"(N lines dropped)" when the host dropped lines before it. -o json prints each record
as one JSON object a line. A host that did not answer is reported on stderr.`,
		Example: `  conductorctl logs squares --tail 20
  conductorctl logs squares -f --host web-1`,
		Args: nargs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if host != "" {
				q.Set("host", host)
			}
			if cmd.Flags().Changed("tail") {
				if tail < 0 || tail > pkgclient.MaxLogTail {
					return usageErrorf("--tail: want 0 to %d lines, not %d", pkgclient.MaxLogTail, tail)
				}
				q.Set("tail", strconv.Itoa(tail))
			}
			if follow {
				q.Set("follow", "true")
			}
			path := "/v1/pools/" + url.PathEscape(args[0]) + "/logs"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			return a.api.logs(cmd.Context(), path, follow, a.stderr)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "go on printing new lines until interrupted")
	f.StringVar(&host, "host", "", "only this host's workers")
	f.IntVar(&tail, "tail", 0, "the last N lines of each host, at most 1000 (default: conductord's, 100)")
	return cmd
}

// logs reads the log stream at path and prints it until it ends, or, when
// following, until ctx does.
func (c *client) logs(ctx context.Context, path string, follow bool, stderr io.Writer) error {
	resp, err := c.open(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		return c.apiError(http.MethodGet, path, resp, raw)
	}
	err = c.printLogs(resp.Body, stderr)
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return fmt.Errorf("read the logs: %w", err)
	case follow:
		return errors.New("conductord ended the log stream")
	}
	return nil
}

// printLogs prints every record of an NDJSON log stream until it ends;
// blank lines (keep-alives) are skipped.
func (c *client) printLogs(stream io.Reader, stderr io.Writer) error {
	sc := bufio.NewScanner(stream)
	sc.Buffer(make([]byte, 0, 64<<10), maxLogLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r pkgclient.LogLine // a line a worker wrote, or (Error set) a note about a host
		if err := json.Unmarshal(line, &r); err != nil {
			fmt.Fprintf(stderr, "conductorctl: unreadable log record %.200q: %v\n", line, err)
			continue
		}
		if r.Error != "" {
			if r.Host == "" {
				fmt.Fprintf(stderr, "conductorctl: pool %s: %s\n", r.Pool, r.Error)
			} else {
				fmt.Fprintf(stderr, "conductorctl: host %s (pool %s): %s\n", r.Host, r.Pool, r.Error)
			}
			continue
		}
		if c.json() {
			if err := printCompact(c.out, line); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintln(c.out, logText(r))
	}
	return sc.Err()
}

// logText is r for a person: TIME HOST/POOL[INDEX] STREAM: LINE.
func logText(r pkgclient.LogLine) string {
	s := fmt.Sprintf("%s %s/%s[%d] %s: %s", r.Time.Format("2006-01-02T15:04:05.000Z07:00"), r.Host, r.Pool, r.Index, r.Stream, r.Line)
	if r.Dropped > 0 {
		s += fmt.Sprintf(" (%d lines dropped)", r.Dropped)
	}
	return s
}

// printCompact prints one JSON value on one line, decoded and encoded
// again (keys sorted).
func printCompact(w io.Writer, raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	return encodeJSON(w, v, "")
}
