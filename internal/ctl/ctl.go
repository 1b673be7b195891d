// Package ctl implements conductorctl: each command is one call (or a few)
// to the conductor's HTTP API, printed for a person.
package ctl

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/secret"
	"github.com/conductor-run/conductor/internal/tlsconf"
)

// ExitError is an error that asks for a specific exit code: 3 means a job
// ended dead (or not in time) after submit --wait; 4 means a host refused a
// pool command or did not answer it; 5 means health found conductord
// unhealthy.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string { return e.Msg }

const usage = `conductorctl: the conductor's command line

Usage:
  conductorctl [--server URL] [--token TOKEN | --token-file FILE] COMMAND [ARGS]

Commands:
  submit [--wait[=D]] [--key K] [--priority P] TYPE PAYLOAD
                                                        queue a job (PAYLOAD is JSON, or - for stdin)
  job ID                                                show a job's state
  jobs [--status S[,S]] [--type T] [--limit N] [--before TIME]
                                                        list jobs, last updated first (at most 100 unless --limit)
  dead [TYPE]                                           list dead jobs, last updated first (at most 100)
  retry ID                                              queue a dead job again
  cancel ID                                             cancel a queued or running job
  pools                                                 list job types with their counts and state
  workers                                               list every worker process on every host
  drain POOL [--timeout D] [--host ID]                  finish in-flight jobs, then stop the workers
  resume POOL [--host ID]                               start a drained pool's workers again
  recycle POOL [--host ID]                              replace every worker, one at a time
  restart POOL [--timeout D] [--host ID]                stop every worker, then start them all again
  resize POOL N [--host ID]                             run N workers
  upgrade POOL [--health D] [--host ID] -- CMD [ARG...] replace every worker with one running CMD,
                                                        rolled back if the first does not stay up for D
  shutdown POOL [--timeout D] [--host ID]               stop the pool for good (D: time for in-flight jobs)
  events [--pool P] [--json]                            print worker and pool events as they happen
  lookup get NAME KEY | set NAME KEY VALUE | del NAME KEY | ls NAME
                                                        read, set, delete or list a named lookup's keys
                                                        (VALUE is JSON, or - for stdin)
  stats                                                 show the last roll-up of the workers' counters
  abort BATCH                                           cancel every job of BATCH not ended yet
  send HOST POOL INDEX MESSAGE                          send a message (JSON, - for stdin) to one worker
  broadcast [--host ID] POOL MESSAGE                    send a message to every worker of POOL ('*': of all)
  health                                                show whether conductord can queue jobs, and its storage
  help                                                  show this

The server comes from --server or CONDUCTOR_SERVER (default http://127.0.0.1:7070),
the token from --token-file, CONDUCTOR_TOKEN or --token.
submit --wait waits up to 60s (or D) and exits 3 if the job is dead or not ended.
Pool commands go to every host that runs the pool, or only to --host; each host's
answer is printed, and the exit code is 4 if any host refused or did not answer.
jobs and dead cut each error to 60 characters: job ID shows the whole state. jobs lists
every status unless --status; for the next page, pass the last UPDATED_AT as --before.
upgrade takes CMD either after -- as words, or as one quoted string split like a shell.
events runs until interrupted; --json prints each event as the API sends it.
`

// Run runs conductorctl with args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("conductorctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	server := fs.String("server", cmp.Or(os.Getenv(names.EnvServer), "http://127.0.0.1:7070"), "conductor HTTP API URL")
	token := fs.String("token", os.Getenv(names.EnvToken), "API token (env CONDUCTOR_TOKEN); on the command line it shows in the process list: prefer --token-file")
	tokenFile := fs.String("token-file", "", "a file holding the API token (chmod 600)")
	var tlsFiles tlsconf.Files
	fs.StringVar(&tlsFiles.CA, "tls-ca", os.Getenv(names.EnvTLSCA), "PEM file of the issuer of the API's certificate, for an https:// --server (default: the system's roots; env CONDUCTOR_TLS_CA)")
	fs.StringVar(&tlsFiles.Cert, "tls-cert", "", "PEM file of a client certificate to present (with --tls-key)")
	fs.StringVar(&tlsFiles.Key, "tls-key", "", "PEM file of the key of --tls-cert")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tlsConfig, err := tlsconf.Client(tlsFiles)
	if err != nil {
		return err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	if *tokenFile != "" {
		tok, shared, err := secret.ReadTokenFile(*tokenFile)
		if err != nil {
			return err
		}
		if shared {
			fmt.Fprintf(stderr, "conductorctl: %s may be read by other users of this host: chmod 600 it\n", *tokenFile)
		}
		*token = tok
	}
	c := &client{base: strings.TrimRight(*server, "/"), token: *token, http: &http.Client{Transport: transport}, out: stdout}
	cmd, rest := fs.Arg(0), fs.Args()[min(1, fs.NArg()):]
	switch cmd {
	case "submit":
		return c.submit(ctx, rest, stderr)
	case "job":
		if len(rest) != 1 {
			return errors.New("usage: conductorctl job ID")
		}
		return c.show(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(rest[0]), nil, nil)
	case "jobs":
		return c.jobs(ctx, rest, stderr)
	case "dead":
		if len(rest) > 1 {
			return errors.New("usage: conductorctl dead [TYPE]")
		}
		path := "/v1/jobs?status=dead"
		if len(rest) == 1 {
			path += "&type=" + url.QueryEscape(rest[0])
		}
		return c.table(ctx, path, []string{"id", "type", "attempts", "updated_at", "error"})
	case "retry":
		if len(rest) != 1 {
			return errors.New("usage: conductorctl retry ID")
		}
		return c.show(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(rest[0])+"/retry", nil, nil)
	case "cancel":
		if len(rest) != 1 {
			return errors.New("usage: conductorctl cancel ID")
		}
		return c.show(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(rest[0])+"/cancel", nil, nil)
	case "pools":
		return c.table(ctx, "/v1/pools", []string{"type", "queued", "held", "running", "succeeded", "failed", "dead", "workers", "state", "reason"})
	case "workers":
		return c.table(ctx, "/v1/workers", []string{"host", "pool", "index", "pid", "state", "rss", "jobs_done", "restarts", "job", "reason"})
	case "drain", "resume", "recycle", "restart", "resize", "upgrade", "shutdown":
		return c.poolCommand(ctx, cmd, rest, stderr)
	case "events":
		return c.events(ctx, rest, stderr)
	case "lookup":
		return c.lookup(ctx, rest)
	case "stats":
		if len(rest) != 0 {
			return errors.New("usage: conductorctl stats")
		}
		return c.show(ctx, http.MethodGet, "/v1/stats", nil, nil)
	case "abort":
		if len(rest) != 1 {
			return errors.New("usage: conductorctl abort BATCH")
		}
		return c.show(ctx, http.MethodPost, "/v1/batches/"+url.PathEscape(rest[0])+"/abort", nil, nil)
	case "send":
		return c.sendMessage(ctx, rest)
	case "broadcast":
		return c.broadcast(ctx, rest, stderr)
	case "health":
		if len(rest) != 0 {
			return errors.New("usage: conductorctl health")
		}
		return c.health(ctx)
	case "help", "":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q; run conductorctl help", cmd)
	}
}

// waitFlag is --wait: alone it means 60s, or --wait=DURATION.
type waitFlag struct{ d time.Duration }

func (w *waitFlag) String() string   { return w.d.String() }
func (w *waitFlag) IsBoolFlag() bool { return true }
func (w *waitFlag) Set(s string) error {
	switch s {
	case "true":
		w.d = 60 * time.Second
	case "false":
		w.d = 0
	default:
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("want a duration such as 30s, got %q", s)
		}
		w.d = d
	}
	return nil
}

func (c *client) submit(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var wait waitFlag
	fs.Var(&wait, "wait", "wait for the job to end (default 60s, or --wait=DURATION)")
	key := fs.String("key", "", "idempotency key: submissions with the same key are one job")
	prio := fs.String("priority", "", "high, normal (the default) or low")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: conductorctl submit [--wait[=DURATION]] [--key K] [--priority P] TYPE PAYLOAD")
	}
	payload := []byte(fs.Arg(1))
	if fs.Arg(1) == "-" {
		var err error
		if payload, err = io.ReadAll(os.Stdin); err != nil {
			return fmt.Errorf("read payload from stdin: %w", err)
		}
	}
	if !json.Valid(payload) {
		return fmt.Errorf("payload is not valid JSON: %q (quote strings: '\"text\"')", fs.Arg(1))
	}
	q := url.Values{}
	if wait.d > 0 {
		q.Set("wait", wait.d.String())
	}
	if *prio != "" {
		q.Set("priority", *prio)
	}
	path := "/v1/jobs/" + url.PathEscape(fs.Arg(0))
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	hdr := http.Header{}
	if *key != "" {
		hdr.Set(names.HeaderIdempotencyKey, *key)
	}
	var job struct{ ID, Status string }
	if err := c.do(ctx, http.MethodPost, path, payload, hdr, &job); err != nil {
		return err
	}
	switch {
	case wait.d == 0 || job.Status == "succeeded":
		return nil
	case job.Status == "dead":
		return &ExitError{Code: 3, Msg: fmt.Sprintf("job %s is dead", job.ID)}
	default:
		return &ExitError{Code: 3, Msg: fmt.Sprintf("job %s is still %s after %s", job.ID, job.Status, wait.d)}
	}
}

type client struct {
	base, token string
	http        *http.Client
	out         io.Writer
}

// do calls the API and prints the JSON answer; into, if set, also receives it.
func (c *client) do(ctx context.Context, method, path string, body []byte, hdr http.Header, into any) error {
	raw, err := c.call(ctx, method, path, body, hdr)
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, raw, "", "  ") != nil {
		pretty.Reset()
		pretty.Write(raw)
	}
	fmt.Fprintln(c.out, strings.TrimSpace(pretty.String()))
	if into != nil {
		return json.Unmarshal(raw, into)
	}
	return nil
}

func (c *client) show(ctx context.Context, method, path string, body []byte, hdr http.Header) error {
	return c.do(ctx, method, path, body, hdr, nil)
}

// call calls the API and returns its answer, or an error for a status of
// 300 or more.
func (c *client) call(ctx context.Context, method, path string, body []byte, hdr http.Header) ([]byte, error) {
	resp, raw, err := c.send(ctx, method, path, body, hdr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, apiError(method, path, resp, raw)
	}
	return raw, nil
}

// send calls the API and returns its answer whatever the status.
func (c *client) send(ctx context.Context, method, path string, body []byte, hdr http.Header) (*http.Response, []byte, error) {
	resp, err := c.open(ctx, method, path, body, hdr)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read answer: %w", err)
	}
	return resp, raw, nil
}

// open calls the API and returns the response, its body unread.
func (c *client) open(ctx context.Context, method, path string, body []byte, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the conductor at %s: %w", c.base, err)
	}
	return resp, nil
}

// apiError is the error of an answer with a status of 300 or more: the
// API's message, if it sent one.
func apiError(method, path string, resp *http.Response, raw []byte) error {
	var e struct{ Error string }
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return fmt.Errorf("%s %s: %s (%s)", method, path, e.Error, resp.Status)
	}
	return fmt.Errorf("%s %s: %s", method, path, resp.Status)
}

// table prints a JSON array of objects as aligned columns.
func (c *client) table(ctx context.Context, path string, cols []string) error {
	raw, err := c.call(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	var rows []map[string]any
	if err := json.Unmarshal(raw, &rows); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
	for _, r := range rows {
		vals := make([]string, len(cols))
		for i, col := range cols {
			vals[i] = cell(col, r[col])
		}
		fmt.Fprintln(tw, strings.Join(vals, "\t"))
	}
	return tw.Flush()
}

// maxError bounds the error column of a table: a job's error can be a whole
// stack trace (conductorctl job ID shows it all).
const maxError = 60

// cell formats v for column col of a table: on one line, and an error cut
// to maxError characters.
func cell(col string, v any) string {
	s := strings.Join(strings.Fields(format(v)), " ")
	if r := []rune(s); col == "error" && len(r) > maxError {
		s = string(r[:maxError-1]) + "…"
	}
	return s
}

func format(v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case float64:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprint(v)
	}
}
