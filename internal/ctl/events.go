package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	// As pkgclient: this package's client is conductorctl's HTTP client.
	pkgclient "github.com/conductor-run/conductor/pkg/client"
)

// maxEventLine bounds one line of the event stream: an event with a
// worker's custom message in it.
const maxEventLine = 4 << 20

// event is one event of GET /v1/events.
type event struct{ pkgclient.Event }

func (a *app) eventsCmd() *cobra.Command {
	var pool string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "events [--pool P] [--json]",
		Short: "print worker and pool events as they happen",
		Long: `Print the supervision events of every host (or of --pool) as they happen, one line
each, until interrupted (GET /v1/events). --json or -o json prints each event as the
API sends it, one JSON object a line.`,
		Args: nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.api.events(cmd.Context(), pool, asJSON || a.api.json(), a.stderr)
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "only the events of this pool")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each event as JSON, as the API sends it (as -o json)")
	return cmd
}

// events streams GET /v1/events and prints one line per event until ctx
// ends (a clean end) or the stream does.
func (c *client) events(ctx context.Context, pool string, asJSON bool, stderr io.Writer) error {
	path := "/v1/events"
	if pool != "" {
		path += "?pool=" + url.QueryEscape(pool)
	}
	resp, err := c.open(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		return c.apiError(http.MethodGet, path, resp, raw)
	}
	target := "every pool"
	if pool != "" {
		target = "pool " + pool
	}
	fmt.Fprintf(stderr, "conductorctl: following the events of %s; interrupt to stop\n", target)
	err = c.printEvents(resp.Body, asJSON)
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return fmt.Errorf("read events: %w", err)
	default:
		return errors.New("the conductor ended the event stream")
	}
}

// printEvents prints the data of every event of an SSE stream until it
// ends. conductord sends each event as one data line.
func (c *client) printEvents(stream io.Reader, asJSON bool) error {
	sc := bufio.NewScanner(stream)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue
		}
		data = strings.TrimPrefix(data, " ")
		if asJSON {
			if printCompact(c.out, []byte(data)) != nil {
				fmt.Fprintln(c.out, data)
			}
			continue
		}
		var e event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			fmt.Fprintf(c.out, "unreadable event %q: %v\n", data, err)
			continue
		}
		fmt.Fprintln(c.out, e.line())
	}
	return sc.Err()
}

// line is e for a person: time, host, pool, scope and kind, then the
// fields that are set, as key=value.
func (e event) line() string {
	parts := []string{e.Time.Format("2006-01-02T15:04:05.000Z07:00"), e.Host, e.Pool, e.Scope, e.Kind}
	add := func(key, val string, set bool) {
		if !set {
			return
		}
		if val == "" || strings.ContainsAny(val, " \t\"=") {
			val = strconv.Quote(val)
		}
		parts = append(parts, key+"="+val)
	}
	worker := e.Scope == "worker"
	add("index", strconv.Itoa(e.Index), worker)
	add("pid", strconv.Itoa(e.PID), e.PID != 0)
	add("reason", e.Reason, e.Reason != "")
	add("exit", e.Exit, e.Exit != "")
	add("code", strconv.Itoa(e.Code), e.Exit != "")
	add("signal", e.Signal, e.Signal != "")
	add("oom", "true", e.OOM)
	add("uptime", time.Duration(e.Uptime).String(), e.Uptime != 0)
	add("count", strconv.Itoa(e.Count), e.Count != 0)
	add("retry_at", e.RetryAt.Format(time.RFC3339), !e.RetryAt.IsZero())
	add("error", e.Error, e.Error != "")
	if len(e.Data) > 0 {
		parts = append(parts, "data="+string(e.Data))
	}
	return strings.Join(parts, " ")
}
